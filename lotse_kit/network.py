"""The network configuration: organisations, their services and the process plans (Ablaufpläne).

A versioned YAML file (`LOTSE_NETWORK_FILE`, demo: deploy/demo/network.yaml) describes
the local integration network. `load_network(path)` validates it completely and raises
`NetworkConfigError` naming the line and field of every problem, so a broken file
stops the service at start instead of surfacing as odd behaviour later.

Every service reads the same file through this module, as an `OrgDirectory`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, ValidationError, field_validator, model_validator

from contracts.sealed import PublicKey, check_public_key
from contracts.topics import ORG_ID_PATTERN
from contracts.vocab import Need, OrgKind

from . import metrics

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = (1,)

_STALE = Gauge(
    "lotse_network_file_stale",
    "1 while the network file on disk is invalid and the last good version is in force.",
    registry=metrics.REGISTRY,
)

OrgId = Annotated[str, StringConstraints(pattern=ORG_ID_PATTERN)]
ServiceId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
LanguageTag = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class _Strict(BaseModel):
    # Unknown keys are typos in a hand-written file: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Service(_Strict):
    id: ServiceId
    name: Name
    needs: list[Need] = Field(default_factory=list, description="Needs this service covers; referrals for them may go here.")
    description: str | None = None


class KafkaQuota(_Strict):
    """Byte rates a principal may produce and fetch (Kafka client quotas, per broker)."""

    producer_byte_rate: int = Field(ge=1024, description="Bytes per second the principal may produce.")
    consumer_byte_rate: int = Field(ge=1024, description="Bytes per second the principal may fetch.")


class KafkaConfig(_Strict):
    """What `lotse admin provision` creates on the cluster beyond what the contracts define."""

    replication_factor: int = Field(1, ge=1, le=7, description="For every topic it creates (3 on a production cluster).")
    partner_quota: KafkaQuota = Field(
        default_factory=lambda: KafkaQuota(producer_byte_rate=1024 * 1024, consumer_byte_rate=2 * 1024 * 1024),
        description="Every partner organisation's quota unless it has its own `kafka_quota`.",
    )
    topic_config: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Topic configuration over the contracts' defaults, by logical topic name or partner template "
        "('partner.{orgId}.inbox.v1'), e.g. {'partner.{orgId}.inbox.v1': {'retention.ms': '604800000'}}.",
    )


class Inbox(_Strict):
    """How a partner reaches its inbox. `kafka` (the default): its own Kafka principal reads
    `partner.<org>.inbox.v1`. `https`: the gateway (services/gateway, docs/gateway.md) serves the same records
    over HTTPS, either for the partner to fetch (`pull`) or posted to `url` as signed webhooks (`push`)."""

    transport: Literal["kafka", "https"] = "kafka"
    mode: Literal["pull", "push"] = "pull"
    url: str | None = Field(
        None,
        max_length=2000,
        pattern=r"^https?://[^\s/?#@]+(/[^\s#]*)?$",
        description="push only: where each record is POSTed (https; plain http only where the gateway allows it).",
    )

    @model_validator(mode="after")
    def _mode_fits(self) -> Inbox:
        if self.transport == "kafka" and (self.mode != "pull" or self.url is not None):
            raise ValueError("mode and url apply to transport https only")
        if self.mode == "push" and self.url is None:
            raise ValueError("mode push needs the url the records are posted to")
        if self.mode == "pull" and self.url is not None:
            raise ValueError("mode pull takes no url (the partner fetches); did you mean mode push?")
        return self

    @property
    def over_https(self) -> bool:
        return self.transport == "https"


class Organisation(_Strict):
    id: OrgId
    name: Name
    kind: OrgKind
    languages: list[LanguageTag] = Field(min_length=1)
    services: list[Service] = Field(default_factory=list)
    contact_email: EmailStr
    description: str | None = None
    kafka_quota: KafkaQuota | None = Field(None, description="This partner's own Kafka quota (default: kafka.partner_quota).")
    dpo_email: EmailStr | None = Field(
        None, description="The data-protection contact (told of overdue acknowledgements); default: contact_email."
    )
    inbox: Inbox = Field(default_factory=Inbox, description="How the partner reaches its inbox: Kafka (default) or HTTPS.")
    keys: list[PublicKey] = Field(
        default_factory=list,
        description="Public keys (JWK, EC P-256): `enc` ones seal personal data to this organisation, `sig` ones verify its "
        "acknowledgements. Several may be active during a rotation; keys can also be registered through the consent API.",
    )

    @field_validator("keys")
    @classmethod
    def _usable_keys(cls, v: list[PublicKey]) -> list[PublicKey]:
        kids = [k.kid for k in v]
        if len(set(kids)) != len(kids):
            raise ValueError("key ids must be unique within an organisation")
        return [check_public_key(k) for k in v]

    @property
    def data_protection_email(self) -> str:
        return str(self.dpo_email or self.contact_email)

    def service(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)


class ProcessPlan(_Strict):
    """For a need: which service of which organisation receives the referral by default, and how fast it answers."""

    need: Need
    service: ServiceId
    organisation: OrgId
    answer_within_working_days: int = Field(ge=1, le=60)
    note: str | None = None


class Network(_Strict):
    version: Literal[1]
    district: Name
    name: Name
    timezone: str = "Europe/Berlin"
    organisations: list[Organisation] = Field(min_length=1)
    process_plans: list[ProcessPlan] = Field(default_factory=list)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)

    # ---------------------------------------------------------------- queries
    def organisation(self, org_id: str) -> Organisation | None:
        return next((o for o in self.organisations if o.id == org_id), None)

    def has_org(self, org_id: str) -> bool:
        return self.organisation(org_id) is not None

    def service(self, org_id: str, service_id: str) -> Service | None:
        org = self.organisation(org_id)
        return org.service(service_id) if org else None

    def plan_for(self, need: Need | str) -> ProcessPlan | None:
        return next((p for p in self.process_plans if p.need == need), None)

    def https_inboxes(self) -> list[Organisation]:
        """Organisations that reach their inbox through the HTTPS gateway."""
        return [o for o in self.organisations if o.inbox.over_https]

    def org_ids(self) -> list[str]:
        return [o.id for o in self.organisations]


# ---------------------------------------------------------------- errors
@dataclass(frozen=True)
class ConfigProblem:
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "(no line)"
        return f"{where}: {self.field}: {self.message}"


class NetworkConfigError(ValueError):
    def __init__(self, path: Path | str, problems: list[ConfigProblem]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"invalid network configuration {self.path}:\n  " + "\n  ".join(str(p) for p in problems))


# ---------------------------------------------------------------- loading
def _line_of(node: yaml.Node | None, loc: Iterable[Any]) -> int | None:
    """The 1-based line of the YAML node at `loc` (keys and list indexes), or of its nearest existing parent."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    child = v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break  # e.g. a missing field: report the parent
        node = child
        line = node.start_mark.line + 1
    return line


def _field(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out or "(root)"


def _cross_references(net: Network) -> list[tuple[tuple[Any, ...], str]]:
    errors: list[tuple[tuple[Any, ...], str]] = []
    seen_orgs: dict[str, int] = {}
    for i, org in enumerate(net.organisations):
        if org.id in seen_orgs:
            errors.append(
                (("organisations", i, "id"), f"duplicate organisation id {org.id!r} (first at organisations[{seen_orgs[org.id]}])")
            )
        seen_orgs.setdefault(org.id, i)
        seen_services: set[str] = set()
        for j, svc in enumerate(org.services):
            if svc.id in seen_services:
                errors.append((("organisations", i, "services", j, "id"), f"duplicate service id {svc.id!r} in organisation {org.id!r}"))
            seen_services.add(svc.id)
    seen_needs: dict[str, int] = {}
    for i, plan in enumerate(net.process_plans):
        if plan.need in seen_needs:
            errors.append(
                (
                    ("process_plans", i, "need"),
                    f"need {plan.need.value!r} already has a process plan (process_plans[{seen_needs[plan.need]}])",
                )
            )
        seen_needs.setdefault(plan.need, i)
        plan_org = net.organisation(plan.organisation)
        if plan_org is None:
            errors.append((("process_plans", i, "organisation"), f"unknown organisation {plan.organisation!r}"))
            continue
        plan_svc = plan_org.service(plan.service)
        if plan_svc is None:
            errors.append((("process_plans", i, "service"), f"organisation {plan_org.id!r} offers no service {plan.service!r}"))
        elif plan.need not in plan_svc.needs:
            errors.append((("process_plans", i, "need"), f"service {plan_org.id}/{plan_svc.id} does not cover need {plan.need.value!r}"))
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(net.timezone)
    except Exception:  # any failure means an unknown zone
        errors.append((("timezone",), f"unknown time zone {net.timezone!r}"))
    return errors


def parse_network(text: str, source: str = "<string>") -> Network:
    """Validates a network document; raises NetworkConfigError naming the line and field of each problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise NetworkConfigError(
            source, [ConfigProblem(mark.line + 1 if mark else None, "(syntax)", str(getattr(exc, "problem", exc)))]
        ) from exc
    if not isinstance(data, dict):
        raise NetworkConfigError(
            source, [ConfigProblem(1, "(root)", "the file must be a mapping with version, organisations and process_plans")]
        )
    version = data.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise NetworkConfigError(
            source,
            [
                ConfigProblem(
                    _line_of(root, ("version",)), "version", f"unsupported version {version!r}; supported: {list(SUPPORTED_VERSIONS)}"
                )
            ],
        )
    try:
        net = Network.model_validate(data)
    except ValidationError as exc:
        problems = [ConfigProblem(_line_of(root, e["loc"]), _field(e["loc"]), e["msg"]) for e in exc.errors()]
        raise NetworkConfigError(source, problems) from None
    refs = _cross_references(net)
    if refs:
        raise NetworkConfigError(source, [ConfigProblem(_line_of(root, loc), _field(loc), msg) for loc, msg in refs])
    return net


def load_network(path: str | Path) -> Network:
    """Reads and validates the network file at `path`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise NetworkConfigError(p, [ConfigProblem(None, "(file)", f"cannot read: {exc.strerror or exc}")]) from exc
    return parse_network(text, str(p))


# ---------------------------------------------------------------- the directory every service reads
class OrgDirectory:
    """The network as the running service sees it. One policy for every service:

    - at start, a missing or invalid file raises `NetworkConfigError`: the service does not start
      (`lotse_kit.serve.run` prints the line and field and exits 2);
    - while running, the file is re-read when its modification time changes (checked at most every
      `check_interval_s`), so adding a partner needs no restart;
    - a file that became missing or invalid while running is not applied: the last good version
      stays in force, the error is logged once per change, and `stale` says why (readiness shows it
      as a warning, the `lotse_network_file_stale` gauge is 1) until a valid file is back.
    """

    def __init__(self, network: Network, *, path: Path | None = None, check_interval_s: float = 2.0) -> None:
        self._network = network
        self.path = path
        self.check_interval_s = check_interval_s
        self.stale: str | None = None
        self._mtime = _mtime(path) if path else None
        self._checked = time.monotonic()

    @classmethod
    def from_file(cls, path: str | Path, *, check_interval_s: float = 2.0) -> OrgDirectory:
        p = Path(path)
        return cls(load_network(p), path=p, check_interval_s=check_interval_s)

    @classmethod
    def of(cls, network: Network) -> OrgDirectory:
        """A fixed directory (tests, tools): never reloaded."""
        return cls(network)

    # ------------------------------------------------------------ reloading
    @property
    def network(self) -> Network:
        if self.path is not None and time.monotonic() - self._checked >= self.check_interval_s:
            self.reload()
        return self._network

    def reload(self) -> bool:
        """Re-reads the file if it changed. Returns True when a new version was applied."""
        assert self.path is not None
        self._checked = time.monotonic()
        mtime = _mtime(self.path)
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            self._network = load_network(self.path)
        except NetworkConfigError as exc:
            self.stale = str(exc)[:1000]
            _STALE.set(1)
            log.error("network file invalid; keeping the last good version", extra={"path": str(self.path), "error": self.stale})
            return False
        self.stale = None
        _STALE.set(0)
        log.info("network file reloaded", extra={"path": str(self.path), "organisations": len(self._network.organisations)})
        return True

    def health(self) -> str:
        return "up" if self.stale is None else "up: last good version in force, file invalid"

    # ------------------------------------------------------------ queries
    def organisation(self, org_id: str) -> Organisation | None:
        return self.network.organisation(org_id)

    def has(self, org_id: str) -> bool:
        return self.network.has_org(org_id)

    def org_ids(self) -> list[str]:
        return self.network.org_ids()

    def name(self, org_id: str) -> str:
        """The organisation's display name, or its id when it is not (or no longer) a member."""
        org = self.network.organisation(org_id)
        return org.name if org else org_id

    def service_name(self, org_id: str, service_id: str) -> str:
        svc = self.network.service(org_id, service_id)
        return svc.name if svc else service_id

    @property
    def timezone(self) -> str:
        return self.network.timezone


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
