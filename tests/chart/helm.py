"""Helm's real engine for the chart tests (tests/tests/chart/), through helm-python-sdk.

    helm.py render CHART --values FILE... [--set-json JSON] [--name N] [--namespace NS] --out DIR
    helm.py lint   CHART --values FILE... [--set-json JSON]
    helm.py schema CHART --values FILE... [--set-json JSON]
    helm.py crds   CHART
    helm.py yaml   FILE          (the YAML documents of FILE as a JSON list)
    helm.py release CHART --kubeconfig FILE --action install|upgrade|uninstall
                   [--values FILE...] [--set-json JSON] [--name N] [--namespace NS]
                                 (Helm's install/upgrade/uninstall actions against the cluster
                                 of FILE; prints the release: name, version, status, manifest)

Every command prints one JSON document on stdout. Values files are merged in order the way
`helm -f a.yaml -f b.yaml` does (maps deep-merged, anything else replaced); --set-json is
merged last. A template or schema failure is reported as {"error": ...}, exit status 0, so the
caller can assert on the message; anything else raises.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

import helm_python as helm
import yaml


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_values(files: list[str], set_json: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for file in files:
        values = merge(values, helm.values_from_yaml(pathlib.Path(file).read_text()))
    if set_json:
        values = merge(values, json.loads(set_json))
    return values


def render(args: argparse.Namespace) -> dict[str, Any]:
    values = load_values(args.values, args.set_json)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with helm.Chart.load(args.chart) as chart:
        try:
            manifests = chart.render(
                values, name=args.name, namespace=args.namespace, is_install=True
            )
        except (helm.HelmRenderError, helm.HelmValuesError) as error:
            return {"error": str(error)}
        crds = chart.crds
    files: list[str] = []
    objects: list[dict[str, Any]] = []
    notes = ""
    for path in sorted(manifests):
        text = manifests[path]
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        docs = [doc for doc in yaml.safe_load_all(text) if doc]
        if not docs:
            continue
        file = out / (path.replace("/", "__"))
        file.write_text(text)
        files.append(str(file))
        for doc in docs:
            doc["__template"] = path
            objects.append(doc)
    crd_files: list[str] = []
    for crd in crds:
        file = out / ("crd__" + pathlib.Path(crd["filename"]).name)
        file.write_text(crd["data"])
        crd_files.append(str(file))
    return {"files": files, "crd_files": crd_files, "objects": objects, "notes": notes}


def lint(args: argparse.Namespace) -> dict[str, Any]:
    values = load_values(args.values, args.set_json)
    return helm.lint(args.chart, values, strict=True, namespace=args.namespace)


def schema(args: argparse.Namespace) -> dict[str, Any]:
    values = load_values(args.values, args.set_json)
    with helm.Chart.load(args.chart) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmValuesError as error:
            return {"error": str(error)}
    return {"ok": True}


def crds(args: argparse.Namespace) -> dict[str, Any]:
    with helm.Chart.load(args.chart) as chart:
        return {"crds": chart.crds, "metadata": chart.metadata}


def yaml_docs(args: argparse.Namespace) -> list[Any]:
    with open(args.chart) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def release(args: argparse.Namespace) -> dict[str, Any]:
    values = load_values(args.values, args.set_json)
    config = helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace)
    try:
        if args.action == "install":
            result = config.install(args.chart, args.name, values, namespace=args.namespace, timeout=60)
        elif args.action == "upgrade":
            result = config.upgrade(args.chart, args.name, values, namespace=args.namespace, timeout=60)
        else:
            result = config.uninstall(args.name, timeout=60)
            result = result.get("release", result)
    except helm.HelmError as error:
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        config.close()
    # helm-python-sdk's release summary: name, namespace, revision, status, manifest, ...
    return {
        "name": result.get("name"),
        "version": result.get("revision"),
        "status": result.get("status"),
        "manifest": result.get("manifest", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="helm.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("yaml").add_argument("chart", metavar="FILE")
    for name in ("render", "lint", "schema", "crds"):
        p = sub.add_parser(name)
        p.add_argument("chart")
        p.add_argument("--values", action="append", default=[])
        p.add_argument("--set-json", default=None)
        p.add_argument("--name", default="grantflow-session")
        p.add_argument("--namespace", default="grantflow-system")
        p.add_argument("--out", default=None)
    p = sub.add_parser("release")
    p.add_argument("chart")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--action", choices=["install", "upgrade", "uninstall"], required=True)
    p.add_argument("--values", action="append", default=[])
    p.add_argument("--set-json", default=None)
    p.add_argument("--name", default="grantflow-session")
    p.add_argument("--namespace", default="grantflow-system")
    args = parser.parse_args()
    commands = {
        "render": render,
        "lint": lint,
        "schema": schema,
        "crds": crds,
        "yaml": yaml_docs,
        "release": release,
    }
    result = commands[args.command](args)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
