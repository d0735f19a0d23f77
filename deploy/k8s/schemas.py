"""JSON schemas for the Kubernetes manifests, from package registries only, and a validator over them.

    python deploy/k8s/schemas.py fetch --dir .run/deploy-validate/schemas
    python deploy/k8s/schemas.py validate --dir .run/deploy-validate/schemas built.yaml ...

Sources (each pinned below; nothing is committed, everything is cached under `--dir`):

- **Kubernetes** built-in kinds: the `kubernetes-validate` wheel from PyPI, which ships the API's JSON
  schemas per Kubernetes release (`kubernetes-json-schema/v<K8S>-local-strict`).
- **Strimzi** (`kafka.strimzi.io/v1`): the CRDs generated from the Strimzi `api` jar on Maven Central by
  Strimzi's own `crd-generator` (also on Maven Central), as Strimzi's build makes its install files.
  Needs Maven and a Java 21+ runtime.
- **KEDA** (`keda.sh/v1alpha1`): the CRDs in the KEDA Go module (`config/crd/bases`), via the Go module proxy.

Each schema is written standalone (the definitions it reaches inlined) and strict (unknown fields are
errors, as `kubectl apply --validate=strict` and kubeconform `-strict` treat them), named as kubeconform
looks schemas up: `<kind><KindSuffix>.json`, e.g. `deployment-apps-v1.json`, `kafkatopic-kafka-v1.json`.
So the same directory serves `kubeconform -schema-location '<dir>/{{ .ResourceKind }}{{ .KindSuffix }}.json'`
and `validate` here (jsonschema-rs), which also fails on any kind it has no schema for.
CEL rules (`x-kubernetes-validations`) are not evaluated by either: the API server does that.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

K8S_VERSION = "1.33.0"
KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0"
STRIMZI_VERSION = "1.2.0"
KEDA_MODULE = "github.com/kedacore/keda/v2@v2.21.0"
STAMP = f"k8s {K8S_VERSION} ({KUBERNETES_VALIDATE}), strimzi {STRIMZI_VERSION}, keda {KEDA_MODULE}"

# Strimzi's custom resources used here, by their API classes in the `api` jar.
STRIMZI_CLASSES = {
    "Kafka": "io.strimzi.api.kafka.model.kafka.Kafka",
    "KafkaNodePool": "io.strimzi.api.kafka.model.nodepool.KafkaNodePool",
    "KafkaTopic": "io.strimzi.api.kafka.model.topic.KafkaTopic",
    "KafkaUser": "io.strimzi.api.kafka.model.user.KafkaUser",
}
KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")

POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>lotse</groupId><artifactId>strimzi-crds</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>{v}</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>{v}</version></dependency>
  </dependencies>
</project>
"""


def log(msg: str) -> None:
    print(f"[schemas] {msg}", file=sys.stderr)


def schema_file(kind: str, api_version: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` (pkg/registry: schemaPath)."""
    group, _, version = api_version.rpartition("/")
    suffix = "-" + (group.split(".")[0] if group else version).lower()
    if group:
        suffix += "-" + version.lower()
    return f"{kind.lower()}{suffix}.json"


# ------------------------------------------------------------------ making schemas strict and standalone
def strict(node: Any) -> Any:
    """Unknown fields become errors where the schema lists the fields and does not keep unknown ones."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """`/api/_definitions.json#/$defs/X` refs turned local, with exactly the definitions reached."""

    def local(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (re.sub(r"^[^#]*_definitions\.json#", "#", v) if k == "$ref" and isinstance(v, str) else local(v))
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [local(v) for v in node]
        return node

    out: dict[str, Any] = local(schema)
    seen: set[str] = set()
    todo = [r.rsplit("/", 1)[1] for r in _refs(out) if r.startswith("#/$defs/")]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [r.rsplit("/", 1)[1] for r in _refs(local(definitions[name])) if r.startswith("#/$defs/")]
    out["$defs"] = {n: local(definitions[n]) for n in sorted(seen)}
    return out


def crd_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File name -> JSON schema for every served version of a CustomResourceDefinition."""
    kind, group = crd["spec"]["names"]["kind"], crd["spec"]["group"]
    out = {}
    for v in crd["spec"]["versions"]:
        if not v.get("served", True):
            continue
        api_version = f"{group}/{v['name']}"
        schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
        props = schema.setdefault("properties", {})
        props["apiVersion"] = {"type": "string", "enum": [api_version]}
        props["kind"] = {"type": "string", "enum": [kind]}
        schema.setdefault("required", [])
        schema["required"] = sorted({*schema["required"], "apiVersion", "kind", "metadata"})
        props.pop("status", None)  # written by the operator, never by a manifest
        out[schema_file(kind, api_version)] = strict(schema)
    return out


# ------------------------------------------------------------------ fetching
def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    log("$ " + " ".join(a if len(a) < 200 else a[:60] + "..." for a in cmd))
    return subprocess.run(cmd, check=True, text=True, **kw)


def java21() -> str:
    """A Java 21+ runtime (Strimzi's crd-generator needs it), as deploy/local/stack.sh looks for Keycloak's."""
    candidates = [os.environ.get("LOTSE_SCHEMAS_JAVA_HOME", ""), os.environ.get("JAVA_HOME", "")]
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*"))
    for home in filter(None, candidates):
        java = Path(home) / "bin" / "java"
        if not java.exists():
            continue
        out = subprocess.run([str(java), "-XshowSettings:properties", "-version"], capture_output=True, text=True).stderr
        m = re.search(r"java\.specification\.version = (\d+)", out)
        if m and int(m.group(1)) >= 21:
            return str(java)
    raise SystemExit("no Java 21+ runtime (for Strimzi's crd-generator): install openjdk-21-jre-headless or set LOTSE_SCHEMAS_JAVA_HOME")


def fetch_kubernetes(out: Path, work: Path) -> int:
    run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(work), KUBERNETES_VALIDATE])
    wheel = next(work.glob("kubernetes_validate-*.whl"))
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{K8S_VERSION}-local-strict/"
    n = 0
    with zipfile.ZipFile(wheel) as z:
        definitions = json.loads(z.read(prefix + "_definitions.json"))["$defs"]
        for name in z.namelist():
            if not name.startswith(prefix) or name.endswith(("_definitions.json", "all.json")):
                continue
            schema = json.loads(z.read(name))
            gvk = schema.get("x-kubernetes-group-version-kind")
            if not gvk:
                continue  # a part of a kind (a spec, a status), never a document of its own
            for g in gvk:
                api_version = f"{g['group']}/{g['version']}" if g["group"] else g["version"]
                (out / schema_file(g["kind"], api_version)).write_text(json.dumps(standalone(schema, definitions)))
                n += 1
    return n


def fetch_strimzi(out: Path, work: Path) -> int:
    (work / "pom.xml").write_text(POM.format(v=STRIMZI_VERSION))
    cp_file = work / "classpath.txt"
    run(["mvn", "-q", "-B", "dependency:build-classpath", f"-Dmdep.outputFile={cp_file}"], cwd=work)
    java = java21()
    n = 0
    for kind, cls in STRIMZI_CLASSES.items():
        target = work / f"{kind}.yaml"
        run([java, "-cp", cp_file.read_text().strip(), "io.strimzi.crdgenerator.CrdGenerator", "--yaml", "--crd-api-version", "v1",
             "--api-versions", "v1", "--storage-version", "v1", f"{cls}={target}"])  # fmt: skip
        for name, schema in crd_schemas(yaml.safe_load(target.read_text())).items():
            (out / name).write_text(json.dumps(schema))
            n += 1
    return n


def fetch_keda(out: Path, work: Path) -> int:
    env = os.environ | {"GOFLAGS": "-mod=mod", "GOMODCACHE": str(work / "gomod"), "GOTOOLCHAIN": "local"}
    info = json.loads(run(["go", "mod", "download", "-json", KEDA_MODULE], capture_output=True, env=env, cwd=work).stdout)
    n = 0
    for f in KEDA_CRDS:
        for name, schema in crd_schemas(yaml.safe_load((Path(info["Dir"]) / "config" / "crd" / "bases" / f).read_text())).items():
            (out / name).write_text(json.dumps(schema))
            n += 1
    return n


def fetch(out: Path) -> None:
    stamp = out / ".sources"
    if stamp.is_file() and stamp.read_text() == STAMP:
        log(f"cached in {out} ({STAMP})")
        return
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="lotse-schemas-") as tmp:
        work = Path(tmp)
        counts = {}
        for name, step in (("kubernetes", fetch_kubernetes), ("strimzi", fetch_strimzi), ("keda", fetch_keda)):
            (work / name).mkdir()
            counts[name] = step(out, work / name)
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)  # the Go module cache is read-only
    stamp.write_text(STAMP)
    log(f"schemas in {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


# ------------------------------------------------------------------ validating
def documents(paths: Iterable[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for p in paths:
        for i, doc in enumerate(yaml.safe_load_all(p.read_text())):
            if doc is not None:
                yield f"{p}#{i}", doc


def validate(schema_dir: Path, paths: Iterable[Path]) -> int:
    import jsonschema_rs  # requirements-dev (through schemathesis)

    validators: dict[str, Any] = {}
    failures = checked = 0
    kinds: dict[str, int] = {}
    for where, doc in documents(paths):
        kind, api = doc.get("kind"), doc.get("apiVersion")
        label = f"{where} {kind} {doc.get('metadata', {}).get('name')}"
        if not kind or not api:
            print(f"FAIL {label}: no kind or apiVersion")
            failures += 1
            continue
        name = schema_file(kind, api)
        if name not in validators:
            path = schema_dir / name
            if not path.is_file():
                print(f"FAIL {label}: no schema for {api} {kind} ({name})")
                failures += 1
                continue
            validators[name] = jsonschema_rs.validator_for(json.loads(path.read_text()))
        errors = list(validators[name].iter_errors(doc))
        checked += 1
        kinds[f"{api} {kind}"] = kinds.get(f"{api} {kind}", 0) + 1
        for e in errors[:10]:
            print(f"FAIL {label}: {'/'.join(map(str, e.instance_path)) or '(root)'}: {e.message}")
        failures += bool(errors)
    for k, n in sorted(kinds.items()):
        log(f"{n:4d} x {k}")
    print(f"{checked} documents checked against {len(validators)} schemas, {failures} invalid")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="Make the schemas (cached by their pinned sources).")
    f.add_argument("--dir", type=Path, required=True)
    v = sub.add_parser("validate", help="Validate multi-document YAML files against them.")
    v.add_argument("--dir", type=Path, required=True)
    v.add_argument("files", type=Path, nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "fetch":
        fetch(args.dir)
        return 0
    return validate(args.dir, args.files)


if __name__ == "__main__":
    sys.exit(main())
