"""A Kubernetes API server for GrantFlow's end-to-end tests: the PyPI `kmock` emulator plus
the small shim it needs for kubectl and kube-rs to work against it.

Usage (the Rust harness, tests/src/apiserver.rs, starts it):

    python tests/kmock/apiserver.py --crd crds/sessionpolicies.yaml --crd crds/revocations.yaml \
        --token TOKEN=USERNAME ... [--webhook-url URL --webhook-ca FILE]

It listens with TLS on 127.0.0.1 (a free port; `--tls-cert`, `--tls-key`), prints one JSON
line `{"url": "https://127.0.0.1:P"}`,
and exits when its standard input closes (so it never outlives the test).

What kmock gives: the HTTP server, request parsing (resource, namespace, name, verb), API
discovery (/api, /apis, /apis/G/V), object storage with history, GET, LIST and WATCH streams.

What this shim adds, as a real API server does it:
- authentication: bearer tokens map to user names (`--token`); anything else is 401;
- metadata: uid, creationTimestamp, resourceVersion (a global counter; PUT and patches that
  carry a stale one are 409 Conflict), generation (bumped when spec changes or deletion
  starts), server fields kept from being overwritten;
- list kinds (`<Kind>List` with a resourceVersion) and fieldSelector `metadata.name=`;
- writes: POST (with generateName), PUT, and PATCH as JSON patch, merge patch, strategic
  merge patch (as a merge patch) and server-side apply (as a merge that replaces lists), with
  field-manager conflicts for apply without force (enough for Lease leader election);
- the status subresource: writes to /status change only status, other writes never change it;
- deletion with finalizers (deletionTimestamp, removal once the finalizers are gone);
- a mutating admission webhook for one resource (`--webhook-url`, `--webhook-ca`), called
  over TLS on CREATE and UPDATE with the request's userInfo, its JSONPatch applied.

What it does not do (a real cluster does; see docs/kubernetes.md for how that risk is
covered): OpenAPI schema validation, defaulting and CEL rules; printer columns (Table
output); RBAC; field ownership beyond the top-level conflict check; watch resourceVersion
semantics (a watch replays current objects, then streams changes).
"""

import argparse
import asyncio
import base64
import copy
import datetime
import itertools
import json
import ssl
import sys
import uuid

import aiohttp
import aiohttp.test_utils
import aiohttp.web
import jsonpatch
import kmock
import yaml
from kmock import KubernetesEmulator, ResourceInfo, Server, resource
from kmock._internal.k8s import KubernetesError, KubernetesObjectNotFoundError

VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']

# Built-in resources the operator uses besides its own.
BUILTINS = {
    ('events.k8s.io', 'v1', 'events'): dict(kind='Event', singular='event', namespaced=True),
    ('coordination.k8s.io', 'v1', 'leases'): dict(kind='Lease', singular='lease', namespaced=True),
    # kubectl's discovery wants the core group to list something.
    ('', 'v1', 'namespaces'): dict(kind='Namespace', singular='namespace', namespaced=False),
}


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def status_error(code: int, reason: str, message: str) -> KubernetesError:
    return KubernetesError(status=code, reason=reason, message=message, details={})


def merge(base, patch, replace_lists=True):
    """RFC 7386 merge: dicts merge recursively, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merge(result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def leaves(value, prefix=()):
    """Paths of the leaf values in a JSON document (lists count as leaves)."""
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from leaves(inner, prefix + (key,))
    else:
        yield prefix, value


def lookup(document, path):
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return KeyError
        document = document[key]
    return document


# Paths a client never owns or changes.
SERVER_FIELDS = ('uid', 'creationTimestamp', 'resourceVersion', 'generation',
                 'deletionTimestamp', 'deletionGracePeriodSeconds', 'managedFields')
IGNORED_FOR_OWNERSHIP = {('apiVersion',), ('kind',), ('metadata', 'name'), ('metadata', 'namespace')}


class ApiServer(KubernetesEmulator):
    """kmock's emulator with the API server behaviour the operator and kubectl rely on."""

    def configure(self, crds, tokens, webhook_url, webhook_ca, webhook_resource):
        self.tokens = tokens
        self.webhook_url = webhook_url
        self.webhook_ssl = ssl.create_default_context(cafile=webhook_ca) if webhook_ca else None
        self.webhook_resource = webhook_resource
        self.infos = {}
        self.rv = itertools.count(1)
        self.last_rv = 0
        self.owners = {}  # object key -> {leaf path: field manager}
        for (group, version, plural), info in BUILTINS.items():
            self.declare(group, version, plural, info['kind'], info['singular'], [], [], False,
                         namespaced=info['namespaced'])
        for path in crds:
            with open(path) as f:
                crd = yaml.safe_load(f)
            spec = crd['spec']
            names = spec['names']
            for v in spec['versions']:
                self.declare(spec['group'], v['name'], names['plural'], names['kind'],
                             names.get('singular', names['kind'].lower()),
                             names.get('shortNames', []), names.get('categories', []),
                             'status' in (v.get('subresources') or {}))

    def declare(self, group, version, plural, kind, singular, shortnames, categories, status,
                namespaced=True):
        res = resource(group, version, plural)
        self.resources[res] = ResourceInfo(
            kind=kind, singular=singular, namespaced=namespaced, verbs=VERBS,
            shortnames=shortnames, categories=categories,
            subresources=['status'] if status else [],
        )
        self.infos[res] = dict(kind=kind, group=group, version=version, status=status)

    def next_rv(self) -> str:
        self.last_rv = next(self.rv)
        return str(self.last_rv)

    # --- request entry point ------------------------------------------------------------

    async def _handle(self, request):
        user = self.authenticate(request)
        res = request.resource
        if res is None or res not in self.infos:
            return await super()._handle(request)
        method = str(request.method.value if hasattr(request.method, 'value') else request.method).upper()
        if method == 'GET':
            return await super()._handle(request)
        body = await self.write(request, method, user)
        return aiohttp.web.json_response(body, status=201 if method == 'POST' else 200)

    def authenticate(self, request) -> str:
        header = request.headers.get('Authorization') or request.headers.get('authorization') or ''
        token = header[len('Bearer '):] if header.startswith('Bearer ') else None
        if token not in self.tokens:
            raise status_error(401, 'Unauthorized', 'Unauthorized')
        return self.tokens[token]

    async def _serve_version(self, request):
        listed = await super()._serve_version(request)
        for entry in listed['resources']:
            if '/' in entry['name']:  # a subresource: no names of its own to resolve
                entry.update(shortNames=[], categories=[], verbs=['get', 'patch', 'update'])
        return listed

    # --- reads --------------------------------------------------------------------------

    async def _serve_list(self, request):
        listed = await super()._serve_list(request)
        info = self.infos.get(request.resource)
        items = [i for i in listed['items'] if self.selected(request, i)]
        return {
            'apiVersion': f"{info['group']}/{info['version']}" if info else 'v1',
            'kind': f"{info['kind']}List" if info else 'List',
            'metadata': {'resourceVersion': str(self.last_rv)},
            'items': items,
        }

    async def _serve_watch(self, request):
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or self.selected(request, event.get('object', {})):
                yield event

    @staticmethod
    def selected(request, obj) -> bool:
        selector = request.params.get('fieldSelector', '')
        for term in filter(None, selector.split(',')):
            field, _, value = term.partition('=')
            if field == 'metadata.name' and obj.get('metadata', {}).get('name') != value.lstrip('='):
                return False
        return True

    # --- writes -------------------------------------------------------------------------

    def key(self, request, name):
        return (request.resource, request.namespace, name)

    def current(self, key):
        obj = self._objects[key] if key in self._objects else None
        return None if obj is None or obj.deleted else copy.deepcopy(obj.raw)

    async def write(self, request, method, user):
        manager = request.params.get('fieldManager') or request.headers.get('User-Agent', 'unknown').split('/')[0]
        async with self._lock:
            if method == 'POST' and request.name is None:
                return await self.create(request, copy.deepcopy(request.data or {}), user, manager)
            if request.name is None:
                raise status_error(405, 'MethodNotAllowed', f'{method} needs an object name')
            key = self.key(request, request.name)
            old = self.current(key)
            if method == 'DELETE':
                if old is None:
                    raise KubernetesObjectNotFoundError()
                return await self.delete(request, key, old)
            if method == 'PUT':
                new = copy.deepcopy(request.data or {})
                self.check_rv(old, new)
            elif method == 'PATCH':
                content_type = request.headers.get('Content-Type', '').split(';')[0]
                if old is None:
                    if content_type == 'application/apply-patch+yaml':
                        return await self.create(request, self.body_of(request), user, manager)
                    raise KubernetesObjectNotFoundError()
                new = self.patched(request, old, content_type, manager)
            else:
                raise status_error(405, 'MethodNotAllowed', method)
            if old is None:
                raise KubernetesObjectNotFoundError()
            return await self.update(request, key, old, new, user, manager)

    @staticmethod
    def body_of(request):
        if request.data is not None:
            return copy.deepcopy(request.data)
        return yaml.safe_load(request.text or '{}') or {}

    @staticmethod
    def check_rv(old, new):
        wanted = (new.get('metadata') or {}).get('resourceVersion')
        if wanted and old is not None and wanted != old['metadata']['resourceVersion']:
            raise status_error(409, 'Conflict', 'the object has been modified; please apply your changes to the latest version and try again')

    def patched(self, request, old, content_type, manager):
        if content_type == 'application/json-patch+json':
            ops = request.data if isinstance(request.data, list) else json.loads(request.text)
            # Kubernetes' json-patch takes `test` of null against a missing member as true.
            kept = []
            for op in ops:
                if op.get('op') == 'test' and op.get('value') is None:
                    try:
                        jsonpatch.JsonPointer(op['path']).resolve(old)
                    except jsonpatch.JsonPointerException:
                        continue
                kept.append(op)
            try:
                new = jsonpatch.apply_patch(old, kept)
            except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict, jsonpatch.JsonPointerException) as e:
                raise status_error(422, 'Invalid', f'the JSON patch does not apply: {e}')
            self.own(request, old, {}, manager, ops=ops)
            return new
        body = self.body_of(request)
        if content_type == 'application/apply-patch+yaml':
            force = request.params.get('force') == 'true'
            if not force:
                self.check_ownership(request, old, body, manager)
        self.check_rv(old, body)
        self.own(request, old, body, manager)
        return merge(old, body)

    def own(self, request, old, body, manager, ops=None):
        owners = self.owners.setdefault(self.key(request, old['metadata']['name']), {})
        if ops is not None:
            paths = [tuple(p for p in op['path'].split('/')[1:]) for op in ops if op.get('op') != 'test']
            values = [None if op.get('op') == 'remove' else op.get('value') for op in ops if op.get('op') != 'test']
        else:
            pairs = list(leaves(body))
            paths = [p for p, _ in pairs]
            values = [v for _, v in pairs]
        for path, value in zip(paths, values):
            if path in IGNORED_FOR_OWNERSHIP:
                continue
            if value is None:
                owners.pop(path, None)
            else:
                owners[path] = manager

    def check_ownership(self, request, old, body, manager):
        owners = self.owners.get(self.key(request, old['metadata']['name']), {})
        for path, value in leaves(body):
            if path in IGNORED_FOR_OWNERSHIP:
                continue
            owner = owners.get(path)
            current = lookup(old, path)
            if owner and owner != manager and current is not KeyError and current != value:
                raise status_error(409, 'Conflict', f'Apply failed with 1 conflict: conflict with "{owner}": .{".".join(path)}')

    async def admit(self, request, operation, obj, old, user):
        if not self.webhook_url or request.resource != self.webhook_resource:
            return obj
        info = self.infos[request.resource]
        gvk = {'group': info['group'], 'version': info['version'], 'kind': info['kind']}
        gvr = {'group': info['group'], 'version': info['version'], 'resource': request.resource.plural}
        review = {
            'apiVersion': 'admission.k8s.io/v1', 'kind': 'AdmissionReview',
            'request': {
                'uid': str(uuid.uuid4()), 'kind': gvk, 'resource': gvr,
                'requestKind': gvk, 'requestResource': gvr,
                'name': obj.get('metadata', {}).get('name', ''), 'namespace': request.namespace,
                'operation': operation,
                'userInfo': {'username': user, 'groups': ['system:authenticated']},
                'object': obj, 'oldObject': old, 'dryRun': False,
            },
        }
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                async with http.post(self.webhook_url, json=review, ssl=self.webhook_ssl) as response:
                    response.raise_for_status()
                    answer = (await response.json())['response']
        except Exception as e:  # failurePolicy: Fail
            raise status_error(500, 'InternalError', f'failed calling webhook: {e}')
        if answer.get('uid') != review['request']['uid']:
            raise status_error(500, 'InternalError', 'webhook answered another request')
        if not answer.get('allowed'):
            message = (answer.get('status') or {}).get('message', 'denied')
            raise status_error(400, 'BadRequest', f'admission webhook denied the request: {message}')
        if answer.get('patch'):
            if answer.get('patchType') != 'JSONPatch':
                raise status_error(500, 'InternalError', 'webhook patch is not a JSONPatch')
            ops = json.loads(base64.b64decode(answer['patch']))
            obj = jsonpatch.apply_patch(obj, ops)
        return obj

    async def create(self, request, obj, user, manager):
        meta = obj.setdefault('metadata', {})
        if not meta.get('name') and meta.get('generateName'):
            meta['name'] = meta['generateName'] + uuid.uuid4().hex[:5]
        if not meta.get('name'):
            raise status_error(422, 'Invalid', 'metadata.name: Required value')
        meta['namespace'] = request.namespace or meta.get('namespace') or 'default'
        key = self.key(request, meta['name'])
        if self.current(key) is not None:
            raise status_error(409, 'AlreadyExists', f'{request.resource.plural} "{meta["name"]}" already exists')
        info = self.infos[request.resource]
        obj['apiVersion'] = f"{info['group']}/{info['version']}" if info['group'] else info['version']
        obj['kind'] = info['kind']
        for field in SERVER_FIELDS:
            meta.pop(field, None)
        if info['status']:
            obj.pop('status', None)
        obj = await self.admit(request, 'CREATE', obj, None, user)
        meta = obj['metadata']
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=self.next_rv(), generation=1)
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        self.owners[key] = {}
        self.own(request, obj, obj, manager)
        await self._buses[request.resource].put({'type': 'ADDED', 'object': copy.deepcopy(obj)})
        return obj

    async def update(self, request, key, old, new, user, manager):
        info = self.infos[request.resource]
        status_only = request.subresource == 'status'
        if status_only:
            result = copy.deepcopy(old)
            if 'status' in new:
                result['status'] = new['status']
            else:
                result.pop('status', None)
        else:
            result = new
            if info['status']:
                if 'status' in old:
                    result['status'] = old['status']
                else:
                    result.pop('status', None)
            result = await self.admit(request, 'UPDATE', result, old, user)
        meta = result.setdefault('metadata', {})
        for field in SERVER_FIELDS:
            if field in old['metadata']:
                meta[field] = old['metadata'][field]
            else:
                meta.pop(field, None)
        meta['name'], meta['namespace'] = old['metadata']['name'], old['metadata']['namespace']
        result['apiVersion'], result['kind'] = old['apiVersion'], old['kind']
        if meta.get('deletionTimestamp') and not meta.get('finalizers'):
            self._objects[key].delete()
            self.owners.pop(key, None)
            await self._buses[request.resource].put({'type': 'DELETED', 'object': copy.deepcopy(result)})
            return result
        if result == old:
            return result  # a no-op write does not move the resourceVersion
        if result.get('spec') != old.get('spec'):
            meta['generation'] = old['metadata'].get('generation', 1) + 1
        meta['resourceVersion'] = self.next_rv()
        self._objects[key].create(result)
        await self._buses[request.resource].put({'type': 'MODIFIED', 'object': copy.deepcopy(result)})
        return result

    async def delete(self, request, key, old):
        meta = old['metadata']
        if meta.get('deletionTimestamp'):
            return old
        if meta.get('finalizers'):
            meta['deletionTimestamp'] = now()
            meta['deletionGracePeriodSeconds'] = 0
            meta['generation'] = meta.get('generation', 1) + 1
            meta['resourceVersion'] = self.next_rv()
            self._objects[key].create(old)
            await self._buses[request.resource].put({'type': 'MODIFIED', 'object': copy.deepcopy(old)})
            return old
        self._objects[key].delete()
        self.owners.pop(key, None)
        await self._buses[request.resource].put({'type': 'DELETED', 'object': copy.deepcopy(old)})
        return old


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--crd', action='append', default=[], help='a CRD YAML file to serve')
    parser.add_argument('--token', action='append', default=[], help='TOKEN=USERNAME')
    parser.add_argument('--webhook-url', help='mutating admission webhook (HTTPS)')
    parser.add_argument('--webhook-ca', help='CA bundle of the webhook')
    parser.add_argument('--webhook-resource', default='session.grantflow.io/v1alpha1/revocations')
    parser.add_argument('--tls-cert', required=True, help='serving certificate (PEM)')
    parser.add_argument('--tls-key', required=True, help='its private key (PEM)')
    args = parser.parse_args()
    tokens = dict(t.split('=', 1) for t in args.token)

    server = ApiServer()
    server.configure(args.crd, tokens, args.webhook_url, args.webhook_ca, resource(args.webhook_resource))
    # TLS as a real API server: clients send bearer tokens only over TLS.
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.tls_cert, args.tls_key)
    class Serving(aiohttp.test_utils.RawTestServer):
        async def start_server(self, loop=None, **kwargs):
            await super().start_server(loop=loop, ssl=tls, **kwargs)

    serving = Serving
    async with server, Server(server, server_cls=serving) as http:
        print(json.dumps({'url': f'https://127.0.0.1:{http.port}'}), flush=True)
        # Serve until the harness closes our standard input.
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.read(4096):
            pass


if __name__ == '__main__':
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
