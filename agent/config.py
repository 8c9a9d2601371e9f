"""Typed settings: a YAML file plus ``LIVER_AGENT_<SECTION>__<KEY>`` environment overrides.

Every option lives here with its default; ``config/agent.example.yaml`` documents each one.
Precedence, highest first: environment, YAML file, defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.response.model import Severity

AE_TITLE_MAX = 16


def _check_ae_title(value: str) -> str:
    value = value.strip()
    if not value or len(value) > AE_TITLE_MAX or "\\" in value or not value.isprintable():
        raise ValueError("an AE title is 1 to 16 printable characters without backslash")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TLSSettings(Section):
    enabled: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    # When set, peers must present a certificate signed by this CA (mutual TLS).
    ca_certificate: Path | None = None


class DicomSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=1, le=65535)
    ae_title: str = "LIVERAGENT"
    # Calling AE titles allowed to associate; empty accepts every caller.
    accepted_calling_aets: list[str] = Field(default_factory=list)
    max_associations: int = Field(16, ge=1, le=512)
    # Maximum PDU length we advertise for receiving, in bytes; a longer PDU is refused with A-ABORT.
    max_pdu: int = Field(262_144, ge=4096, le=1 << 26)
    acse_timeout_s: float = Field(30, gt=0)
    dimse_timeout_s: float = Field(60, gt=0)
    network_timeout_s: float = Field(60, gt=0)
    # Largest inflated prefix of a deflated dataset read to find its identifying attributes; an instance
    # whose attributes lie further is refused (0xA700).
    deflated_prefix_max_bytes: int = Field(4 << 20, ge=1 << 16, le=1 << 30)
    # Seconds ``serve`` waits for in-flight associations after SIGTERM.
    shutdown_grace_s: float = Field(30, ge=0)
    # Processes accepting associations on the one listening socket; 0 = one per CPU core, at most 4.
    receiver_processes: int = Field(0, ge=0, le=64)
    tls: TLSSettings = Field(default_factory=TLSSettings)

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))

    @field_validator("accepted_calling_aets")
    @classmethod
    def _check_callers(cls, value: list[str]) -> list[str]:
        return [_check_ae_title(v) for v in value]


class StorageSettings(Section):
    spool_dir: Path = Path("var/spool")
    # Refuse new instances (0xA700) when free space on the spool falls below this.
    min_free_mb: int = Field(500, ge=0)


class DatabaseSettings(Section):
    url: SecretStr = SecretStr("sqlite:///var/agent.db")
    echo: bool = False


class StabilitySettings(Section):
    # A study is stable once no instance arrived for this long (Orthanc's StableAge).
    stable_after_s: float = Field(60, gt=0)
    # ... or at the latest this long after its first instance, when instances keep trickling in.
    max_wait_s: float = Field(900, gt=0)
    # A study whose new instances are only SRs (measurements saved on a study already here) is complete on
    # arrival: stable after this quiet time instead of stable_after_s.
    sr_quiet_s: float = Field(5, gt=0)
    check_interval_s: float = Field(1, gt=0)


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # auto: JSON lines unless stderr is a terminal.
    format: Literal["auto", "json", "console"] = "auto"


class PeerCommon(Section):
    """What every kind of peer has: its ``type`` and what the agent uses it for."""

    # How the peer is reached (agent/peers lists the kinds): dimse (C-FIND, C-MOVE/C-GET, C-STORE) or
    # dicomweb (QIDO-RS, WADO-RS, STOW-RS).
    type: str = "dimse"
    # Use this peer to find and retrieve priors.
    query_retrieve: bool = True
    # Send our results to this peer.
    store: bool = True


class PeerSettings(PeerCommon):
    """A remote DICOM node (the PACS) reached over DIMSE: C-FIND, C-MOVE / C-GET, C-STORE."""

    type: Literal["dimse"] = "dimse"
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    max_pdu: int = Field(262_144, ge=0)
    acse_timeout_s: float = Field(30, gt=0)
    dimse_timeout_s: float = Field(120, gt=0)
    network_timeout_s: float = Field(60, gt=0)
    retrieve_method: Literal["move", "get"] = "move"
    # C-MOVE destination AE title the peer sends priors to (it must know it); null = our dicom.ae_title.
    move_destination: str | None = None

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))


def _check_http_url(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError("a DICOMweb URL starts with http:// or https://")
    if "@" in value.split("//", 1)[1].split("/", 1)[0]:
        raise ValueError("put credentials in username/password or token, not in the URL")
    return value


class DicomwebPeerSettings(PeerCommon):
    """A PACS or imaging store reached over DICOMweb: QIDO-RS, WADO-RS, STOW-RS."""

    type: Literal["dicomweb"]
    # Base URL of the DICOMweb service (e.g. https://pacs.example.org/dicom-web); each of qido_url,
    # wado_url and stow_url, when set, replaces it for that service.
    url: str | None = None
    qido_url: str | None = None
    wado_url: str | None = None
    stow_url: str | None = None
    # none, basic (username + password) or bearer (token). A secret comes from the file, or from the
    # environment variable named by password_env / token_env.
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    token: SecretStr | None = None
    token_env: str | None = None
    # Verify the server's TLS certificate (against ca_file when set, else REQUESTS_CA_BUNDLE or certifi).
    tls_verify: bool = True
    ca_file: Path | None = None
    connect_timeout_s: float = Field(10, gt=0)
    # Longest wait for the server's answer to one request.
    read_timeout_s: float = Field(120, gt=0)
    # Objects sent in one STOW-RS request at most (bytes, summed over the files).
    stow_batch_mb: float = Field(64, gt=0)
    # A WADO-RS answer larger than this is refused (bounded memory).
    max_instance_mb: float = Field(512, gt=0)

    _urls = field_validator("url", "qido_url", "wado_url", "stow_url")(
        classmethod(lambda cls, v: _check_http_url(v))
    )

    @model_validator(mode="after")
    def _check(self) -> DicomwebPeerSettings:
        if self.query_retrieve and not (self.url or (self.qido_url and self.wado_url)):
            raise ValueError("a dicomweb peer used for query/retrieve needs url (or qido_url and wado_url)")
        if self.store and not (self.url or self.stow_url):
            raise ValueError("a dicomweb peer used as a store destination needs url (or stow_url)")
        if self.auth == "basic" and not self.username:
            raise ValueError("auth basic needs username (and password or password_env)")
        if self.auth == "bearer" and self.token is None and not self.token_env:
            raise ValueError("auth bearer needs token or token_env")
        return self

    def service_url(self, service: Literal["qido", "wado", "stow"]) -> str:
        root = {"qido": self.qido_url, "wado": self.wado_url, "stow": self.stow_url}[service] or self.url
        if root is None:
            raise ValueError(f"no URL for {service.upper()}-RS")
        return root


def _peer_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type") or "dimse")
    return str(getattr(value, "type", "dimse"))


# A configured peer, of the kind its ``type`` names (dimse when absent).
AnyPeerSettings = Annotated[
    Annotated[PeerSettings, Tag("dimse")] | Annotated[DicomwebPeerSettings, Tag("dicomweb")],
    Discriminator(_peer_type),
]


class UIDSettings(Section):
    # Root for every UID the agent creates. The default is a UUID-derived 2.25 root.
    org_root: str = "2.25.208329370317461296372539217536313711491."

    @field_validator("org_root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        body = value.rstrip(".")
        parts = body.split(".")
        if not body or len(body) > 48 or any(not p.isdigit() or (len(p) > 1 and p[0] == "0") for p in parts):
            raise ValueError("org_root must be a dotted numeric UID prefix of at most 48 characters")
        return body + "."


Scope = Literal["read", "acknowledge", "store", "confirm"]


def _read_scope() -> list[Scope]:
    return ["read"]


def _all_severities() -> list[Severity]:
    return list(Severity)


class APITokenSettings(Section):
    """A bearer token of the HTTP API, stored only as a hash (``liver-agent web hash-token``)."""

    name: str = Field(min_length=1, max_length=64)
    # "sha256$<hex>" or "pbkdf2_sha256$<iterations>$<salt>$<hex>".
    hash: SecretStr
    # read: GET endpoints; acknowledge: also POST acknowledgements; store: STOW-RS (POST /dicomweb/studies).
    scopes: list[Scope] = Field(default_factory=_read_scope)


class WebUserSettings(Section):
    """A person who may log in to the worklist pages (and see patient names and IDs)."""

    username: str = Field(min_length=1, max_length=64)
    # pbkdf2_sha256 hash from ``liver-agent web hash-token``.
    password_hash: SecretStr
    display_name: str | None = None


class WebSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    enabled: bool = True
    # Bearer tokens accepted by /api/*; none configured means the API refuses every request.
    tokens: list[APITokenSettings] = Field(default_factory=list)
    # Users of the worklist pages.
    users: list[WebUserSettings] = Field(default_factory=list)
    # Key signing the session cookie; empty draws a random key at start (sessions end with the process).
    session_secret: SecretStr = SecretStr("")
    # Lifetime of a login session, in minutes.
    session_minutes: int = Field(480, ge=1)
    # Send the session cookie only over HTTPS (set when a TLS proxy fronts the agent).
    secure_cookies: bool = False
    # STOW-RS (POST /dicomweb/studies, tokens with the store scope): the largest request accepted, in MiB.
    # The request goes to the spool as it arrives (memory stays bounded), then is filed instance by instance.
    stow_max_request_mb: int = Field(2048, ge=1)


class AlertSinkSettings(BaseModel):
    """One alert destination; ``type`` names a sink class, the other keys are that class's options."""

    model_config = ConfigDict(extra="allow")

    # webhook, hl7 or log (agent/alerts/sinks.py lists them).
    type: str
    # Severities sent to this sink.
    severities: list[Severity] = Field(default_factory=_all_severities)


class AlertSettings(Section):
    # Destinations of alerts, by name.
    sinks: dict[str, AlertSinkSettings] = Field(default_factory=dict)
    # Seconds between passes of the delivery loop.
    delivery_interval_s: float = Field(5, gt=0)
    # Exponential back-off of a failed delivery: first wait, factor, ceiling (seconds).
    retry_initial_s: float = Field(10, gt=0)
    retry_factor: float = Field(2, ge=1)
    retry_max_s: float = Field(900, gt=0)
    # A delivery still failing this long after it was queued is given up (and raises an operational alert).
    give_up_after_s: float = Field(86_400, gt=0)
    # Raise the DISK_LOW operational alert when free space on the spool falls below this many MiB.
    disk_low_mb: int = Field(2_000, ge=0)
    # Raise PACS_UNREACHABLE when a peer has not answered (queries, retrieval, delivery) for this long (s).
    pacs_unreachable_after_s: float = Field(900, ge=0)


class PhaseRuleSettings(Section):
    # Case-insensitive regular expression searched in the series description and Contrast/Bolus Agent.
    pattern: str
    phase: Literal["unenhanced", "arterial", "portal_venous", "delayed", "hepatobiliary"]

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class SRSettings(Section):
    # Contrast-phase rules, first match wins; empty uses the built-in rules (agent/sr/context.py).
    phase_rules: list[PhaseRuleSettings] = Field(default_factory=list)
    # Link lesions across studies by organ and 3D position within this distance (mm); null disables.
    link_distance_mm: float | None = Field(None, gt=0)
    # Choi density when a time point is contrast-enhanced CT of unknown phase: compare, assuming the density
    # phase (a warning in the result and in any discordance alert resting on it), or leave it not evaluable.
    # A known phase mismatch (arterial vs portal venous) is never compared.
    choi_assume_unknown_phase: bool = True
    # A lesion's mean HU measured from its CT image when the SR gives diameters only (an SR value wins).
    density_from_images: bool = True
    # Reader bounds: content-tree depth, number of content items, file size.
    max_depth: int = Field(48, ge=4, le=1000)
    max_items: int = Field(20_000, ge=10)
    max_file_mb: float = Field(64, gt=0)


def _check_regex(value: str) -> str:
    import re

    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


class ClassifySettings(Section):
    """Which received studies are liver follow-ups; every other study is marked ``ignored``."""

    # Image modalities that can make a study a liver follow-up.
    modalities: list[str] = Field(default_factory=lambda: ["CT", "MR"])
    # Case-insensitive regular expressions; an image series of those modalities matching any one qualifies.
    body_part_pattern: str = r"abd|liver|leber|foie|hígado|chest.?abd|tap|cap|whole.?body"
    description_pattern: str = r"liver|hepat|leber|foie|abd|oncolog|follow|restag|\btap\b|\bcap\b|thorax.?abd"
    # Procedure Code Sequence values (CodeValue, or SCHEME:VALUE) that qualify a study on their own.
    procedure_codes: list[str] = Field(default_factory=list)
    # Study or series descriptions matching this exclude the series (empty: none).
    exclude_pattern: str = r"\b(head|brain|cranial|spine|knee|hand|foot)\b"

    _re = field_validator("body_part_pattern", "description_pattern", "exclude_pattern")(
        classmethod(lambda cls, v: _check_regex(v))
    )


class PatientRuleSettings(Section):
    """One rule giving a patient's primary / therapy / criteria; every ``match`` entry must match."""

    # Attribute -> case-insensitive regex. Attributes: patient_id, issuer, study_description,
    # accession_number, admitting_diagnoses, reason_for_procedure, clinical_trial_protocol_id, procedure_code.
    match: dict[str, str] = Field(default_factory=dict)
    primary: str | None = None
    therapy: list[str] | None = None
    treatment_start: str | None = None  # YYYY-MM-DD
    # Explicit criteria (replace the defaults of docs/criteria.md §0), e.g. [RECIST1.1, Choi].
    criteria: list[str] | None = None


class AssessSettings(Section):
    """Where a patient's primary tumour and therapy come from, hence the criteria (docs/criteria.md §0)."""

    # Rules by patient or study attributes; first match wins, then built-in detection, then the defaults.
    rules: list[PatientRuleSettings] = Field(default_factory=list)
    # Detect primary / therapy from the study's own text (description, admitting diagnoses, reason).
    detect_from_study: bool = True
    default_primary: str = "unknown"
    default_therapy: list[str] = Field(default_factory=list)
    # Therapy names that mean immune checkpoint inhibition (iRECIST is added).
    immunotherapy: list[str] = Field(
        default_factory=lambda: [
            "immunotherapy", "checkpoint", "pembrolizumab", "nivolumab", "ipilimumab", "atezolizumab",
            "durvalumab", "avelumab", "cemiplimab", "tremelimumab", "dostarlimab",
        ]
    )


class PipelineSettings(Section):
    # Run the study worker inside ``serve``.
    enabled: bool = True
    # Seconds between looks for claimable jobs.
    poll_interval_s: float = Field(2, gt=0)
    # A claimed job is claimed again by another worker when its lease expires (crash recovery).
    lease_s: float = Field(300, gt=0)
    # Attempts before a failing job stays failed; a failed attempt waits ``retry_after_s``.
    max_attempts: int = Field(5, ge=1)
    retry_after_s: float = Field(60, ge=0)
    # An unreachable or busy peer is not an attempt: the job waits retry_after_s (>= 1 s) doubling up to this.
    outage_retry_max_s: float = Field(600, gt=0)
    # Prior studies searched on the PACS: this many years back, these modalities.
    prior_years: float = Field(3, gt=0)
    prior_modalities: list[str] = Field(default_factory=lambda: ["CT", "MR", "SR"])
    # Directory of the objects we write (SR, summary), kept until delivered and afterwards.
    results_dir: Path = Path("var/results")
    classify: ClassifySettings = Field(default_factory=ClassifySettings)
    assess: AssessSettings = Field(default_factory=AssessSettings)


class OutboxSettings(Section):
    # Seconds between delivery rounds.
    interval_s: float = Field(5, gt=0)
    # Retry back-off: first wait, doubling per failure, capped (dcm4chee-like 30 s .. 10 min).
    backoff_initial_s: float = Field(30, gt=0)
    backoff_max_s: float = Field(600, gt=0)
    # A delivery still pending after this long raises an operational alert (the object is kept).
    give_up_after_s: float = Field(86_400, gt=0)
    # Objects sent per association.
    batch: int = Field(50, ge=1)


class NodeSettings(Section):
    """This ``serve`` process among several sharing one PostgreSQL database (README, "Several nodes")."""

    # The node's name, unique among the nodes; empty = the host name.
    name: str = Field("", max_length=64)
    # Seconds between heartbeats in the database.
    heartbeat_s: float = Field(5, gt=0)
    # A node silent this long is gone: its studies are processed by another node, which retrieves the
    # files it needs from the PACS.
    dead_after_s: float = Field(30, gt=0)

    def resolved_name(self) -> str:
        import socket

        return self.name or socket.gethostname()[:64]


class MarkerHL7Settings(Section):
    """HL7 v2 ORU^R01 over MLLP for tumour marker results (agent/markers/hl7in.py); off by default."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)
    # MSH-3 sending applications accepted; a message from any other is answered AR. Empty refuses all.
    allowed_applications: list[str] = Field(default_factory=list)
    # Local OBX-3 codes of the laboratory -> marker (CEA, CA 19-9, CA 15-3, CA 125, AFP, chromogranin A);
    # LOINC codes (coding system LN) are known already.
    local_codes: dict[str, str] = Field(default_factory=dict)
    # A frame larger than this is refused (AR) and the connection closed.
    max_message_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    # Seconds from a message's first byte to its end; seconds a connection may stay idle between messages.
    read_timeout_s: float = Field(30, gt=0)
    idle_timeout_s: float = Field(300, gt=0)
    max_connections: int = Field(8, ge=1, le=256)

    @field_validator("local_codes")
    @classmethod
    def _known_markers(cls, value: dict[str, str]) -> dict[str, str]:
        from agent.response.parse import ValidationError as MarkerError
        from agent.response.parse import marker_from_name

        for code, name in value.items():
            try:
                marker_from_name(name, f"local_codes.{code}")
            except MarkerError as exc:
                raise ValueError(str(exc)) from None
        return value


class MarkerSettings(Section):
    hl7: MarkerHL7Settings = Field(default_factory=MarkerHL7Settings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIVER_AGENT_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    dicom: DicomSettings = Field(default_factory=DicomSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    stability: StabilitySettings = Field(default_factory=StabilitySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    peers: dict[str, AnyPeerSettings] = Field(default_factory=dict)
    uids: UIDSettings = Field(default_factory=UIDSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    sr: SRSettings = Field(default_factory=SRSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    markers: MarkerSettings = Field(default_factory=MarkerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return env_settings, init_settings


class ConfigError(Exception):
    """The configuration file or environment is invalid; the message says where."""


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{where}: {e['msg']}")
    return "; ".join(lines)


def load_settings(path: Path | str | None = None) -> Settings:
    """Read settings from ``path`` (optional YAML) and the environment; raise ConfigError if invalid."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
    try:
        return Settings(**data)
    except ValidationError as exc:
        source = f"{path}: " if path is not None else ""
        raise ConfigError(f"{source}{_format_validation_error(exc)}") from exc


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked (passwords inside URLs too)."""
    data = settings.model_dump(mode="json")
    url = settings.database.url.get_secret_value()
    data["database"]["url"] = mask_url(url)
    for sink in data.get("alerts", {}).get("sinks", {}).values():
        for key in sink:
            if "secret" in key or "password" in key:
                sink[key] = "**********"
    return data


def mask_url(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
