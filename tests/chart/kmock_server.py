"""A Kubernetes API emulator for the chart's smoke test: kmock's KubernetesEmulator with

- the bundled built-in resources (v1, apps/v1, policy/v1, rbac, admissionregistration, ...);
- the resources of the CRD files given as arguments (session.grantflow.io);
- the third-party resources the chart may render (ServiceMonitor, cert-manager Certificate
  and Issuer, Istio AuthorizationPolicy), as if their CRDs were installed;
- a fix for kmock 0.8's discovery of the core group: /api/v1 answers groupVersion "/v1",
  which kubectl cannot map; it must be "v1".

    python kmock_server.py [CRD.yaml ...]

Prints one line, {"url": "http://127.0.0.1:PORT"}, then serves until its stdin closes (so it
never outlives the test that started it).
"""

from __future__ import annotations

import asyncio
import json
import sys

import kmock
import yaml

THIRD_PARTY = [
    ("monitoring.coreos.com/v1/servicemonitors", "ServiceMonitor", "servicemonitor"),
    ("cert-manager.io/v1/certificates", "Certificate", "certificate"),
    ("cert-manager.io/v1/issuers", "Issuer", "issuer"),
    ("security.istio.io/v1/authorizationpolicies", "AuthorizationPolicy", "authorizationpolicy"),
]
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def declare(k: kmock.KubernetesEmulator, key: str, kind: str, singular: str, **extra) -> None:
    k.resources[key] = kmock.ResourceInfo(
        kind=kind, singular=singular, namespaced=True, verbs=set(VERBS), **extra
    )


async def main() -> None:
    k = kmock.KubernetesEmulator()
    k.resources.load_bundled()
    for key, kind, singular in THIRD_PARTY:
        declare(k, key, kind, singular)
    for path in sys.argv[1:]:
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                for version in spec["versions"]:
                    declare(
                        k,
                        f"{spec['group']}/{version['name']}/{spec['names']['plural']}",
                        spec["names"]["kind"],
                        spec["names"]["singular"],
                        shortnames=set(spec["names"].get("shortNames", [])),
                        categories=set(spec["names"].get("categories", [])),
                        subresources=set(version.get("subresources", {})),
                    )

    async def core_v1(request: kmock.Request) -> dict:
        document = await k._serve_version(request)
        document["groupVersion"] = "v1"
        return document

    k["get /api/v1"] << core_v1

    async with k, kmock.Server(k) as server:
        print(json.dumps({"url": f"http://127.0.0.1:{server.port}"}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
