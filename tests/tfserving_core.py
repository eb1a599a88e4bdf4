"""A stand-in for ``tensorflow_model_server``'s startup and config-reload rules, for tests.

:func:`start` takes a container's ``args``, the mounted ``models.config`` text and a directory standing
in for the pod's filesystem root (base_path ``/models/m`` is ``fs_root/models/m``), and decides what the
real server does: exit or hang (:class:`StartupError`, with the real message where there is one), or
start with some versions loaded and a version-label map. :meth:`ServerState.reload` is the
``--model_config_file_poll_wait_seconds`` path.

Every rule cites its upstream file (tensorflow/serving, under ``tensorflow_serving/`` unless said
otherwise) and function. Where the real outcome is a race, or the real server carries on in a state our
pods cannot use, the stand-in fails: it is meant to be at least as strict. Not modelled: the contents of
the monitoring, batching, SSL and platform files, ``--model_base_path`` single-model mode, load retries
and timing, request handling beyond label resolution.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

TENSORFLOW = "tensorflow"


class StartupError(Exception):
    """tensorflow_model_server exits, or never finishes starting, for this reason."""


class ReloadError(Exception):
    """A config reload failed. ``state`` is the server afterwards: it keeps running, and keeps whatever
    the failed reload had already changed (as ``ServerCore::ReloadConfig`` does)."""

    def __init__(self, message: str, state: ServerState):
        super().__init__(message)
        self.state = state


# --- Flags ---------------------------------------------------------------------------------------

I32, I64, BOOL, STR, FLOAT = "int32", "int64", "bool", "string", "float"
# model_servers/main.cc flag_list, in its order: tensorflow::Flags::Parse
# (tensorflow/core/util/command_line_flags.cc) offers each argument to these in turn, first match
# wins. Types are those of the Server::Options fields they set (model_servers/server.h).
FLAGS = (
    ("port", I32), ("grpc_socket_path", STR), ("rest_api_port", I32), ("rest_api_num_threads", I32),
    ("rest_api_timeout_in_ms", I32), ("rest_api_enable_cors_support", BOOL), ("enable_batching", BOOL),
    ("allow_version_labels_for_unavailable_models", BOOL), ("batching_parameters_file", STR),
    ("enable_per_model_batching_parameters", BOOL), ("model_config_file", STR),
    ("model_config_file_poll_wait_seconds", I32), ("model_name", STR), ("model_base_path", STR),
    ("num_load_threads", I32), ("num_unload_threads", I32), ("max_num_load_retries", I32),
    ("load_retry_interval_micros", I64), ("file_system_poll_wait_seconds", I32),
    ("flush_filesystem_caches", BOOL), ("tensorflow_session_parallelism", I64),
    ("tensorflow_session_config_file", STR), ("tensorflow_intra_op_parallelism", I64),
    ("tensorflow_inter_op_parallelism", I64), ("use_alts_credentials", BOOL), ("ssl_config_file", STR),
    ("platform_config_file", STR), ("per_process_gpu_memory_fraction", FLOAT), ("saved_model_tags", STR),
    ("grpc_channel_arguments", STR), ("grpc_max_threads", I32), ("enable_model_warmup", BOOL),
    ("num_request_iterations_for_warmup", I32), ("version", BOOL), ("monitoring_config_file", STR),
    ("remove_unused_fields_from_bundle_metagraph", BOOL), ("prefer_tflite_model", BOOL),
    ("num_tflite_pools", I32), ("num_tflite_interpreters_per_pool", I32),
    ("enable_signature_method_name_check", BOOL), ("xla_cpu_compilation_enabled", BOOL),
    ("xla_gpu_compilation_enabled", BOOL), ("enable_profiler", BOOL),
    ("thread_pool_factory_config_file", STR), ("mixed_precision", STR), ("skip_initialize_tpu", BOOL),
    ("enable_grpc_healthcheck_service", BOOL), ("enable_serialization_as_tensor_content", BOOL),
)
# Server::Options defaults (model_servers/server.h) of the flags the rules below read. Note
# file_system_poll_wait_seconds: server.h says 1 and server.cc passes it on, overriding ServerCore's 30.
DEFAULTS = {"port": 8500, "grpc_socket_path": "", "rest_api_port": 0, "enable_batching": False,
            "allow_version_labels_for_unavailable_models": False, "batching_parameters_file": "",
            "model_config_file": "", "model_config_file_poll_wait_seconds": 0, "model_base_path": "",
            "file_system_poll_wait_seconds": 1, "platform_config_file": "", "version": False}

# command_line_flags.cc reads numbers with sscanf("%d%c") / ("%f%c"): leading blanks, the number and
# nothing after it. Floats: decimal notation only here (sscanf also takes hex, inf, nan: stricter).
_INT = re.compile(r"\s*[+-]?\d+")
_FLOAT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT_LIMIT = {I32: 2**31, I64: 2**63}


def _match_flag(arg: str, name: str, kind: str) -> tuple[object, str | None] | None:
    """command_line_flags.cc Parse<Type>Flag: None if ``arg`` is not this flag, else (value, error)."""
    if not arg.startswith(f"--{name}"):
        return None
    rest = arg[len(name) + 2:]
    bad = f"Couldn't interpret value {{}} for flag {name}."
    if kind == BOOL:  # ParseBoolFlag: the bare name, "=true" or "=false"; any other tail is a bad value
        return {"": (True, None), "=true": (True, None), "=false": (False, None)}.get(
            rest, (None, bad.format(rest)))
    if not rest.startswith("="):  # the other types need "--name=": "--port_x" is not --port
        return None
    text = rest[1:]
    if kind == STR:
        return text, None
    if kind in _INT_LIMIT:
        ok = _INT.fullmatch(text) and -_INT_LIMIT[kind] <= int(text) < _INT_LIMIT[kind]
        return (int(text), None) if ok else (None, bad.format(text))
    return (float(text), None) if _FLOAT.fullmatch(text) else (None, bad.format(text))


def parse_flags(args: list[str]) -> dict[str, object]:
    """model_servers/main.cc main(): Flags::Parse, then --version, then the leftover-argument check."""
    values, errors, unknown = dict(DEFAULTS), [], []
    for i, arg in enumerate(args):
        if arg == "--":  # Flags::Parse passes "--" and everything after it through, unparsed
            unknown += args[i:]
            break
        for name, kind in FLAGS:
            if (match := _match_flag(arg, name, kind)) is not None:
                value, error = match
                if error:
                    errors.append(error)
                else:
                    values[name] = value
                break
        else:
            unknown.append(arg)
    if errors:  # Flags::Parse returned false: main() prints the usage and returns -1
        raise StartupError(errors[0])
    if values["version"]:  # main() prints the version and returns 0: nothing is served
        raise StartupError("--version: tensorflow_model_server prints its version and exits")
    if unknown:
        # main() prints this and carries on with the argument ignored, so a misspelt flag silently
        # does nothing. Refused here: a typo must not pass as a setting.
        raise StartupError(f"unknown argument: {unknown[0]}")
    return values


# --- Config --------------------------------------------------------------------------------------

def parse_config(text: str, path: str) -> model_server_config_pb2.ModelServerConfig:
    """util/proto_util.h ParseProtoTextFile: protobuf TextFormat, so unknown fields are errors."""
    try:
        return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as err:
        raise ValueError(f"Invalid protobuf file: '{path}' ({err})") from None


def _is_relative(uri: str) -> bool:
    """server_core.cc UriIsRelativePath: no scheme://host (tensorflow io::ParseURI) and no leading '/'."""
    return not re.match(r"[a-zA-Z][0-9a-zA-Z.]*://", uri) and not uri.startswith("/")


def _platform(model) -> str:
    """server_core.cc GetPlatform: model_platform, or the deprecated model_type TENSORFLOW; not both."""
    if model.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if model.model_platform:
            raise ValueError("Illegal setting both ModelServerConfig::model_type (deprecated) and "
                             f"ModelServerConfig::model_platform, model name is {model.name}")
        if model.model_type != model_server_config_pb2.TENSORFLOW:
            raise ValueError(f"ModelServerConfig::model_type choice {model.model_type} not supported.")
        return TENSORFLOW
    if not model.model_platform:
        raise ValueError("Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                         f"ModelServerConfig::model_platform, model name is {model.name}")
    return model.model_platform


def _validate_model_config_list(models) -> None:
    """server_core.cc ValidateModelConfigList (no model_config_list_root_dir: server.cc never sets it)."""
    names = [m.name for m in models]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"Illegal to list model {name} multiple times in config list")
    for m in models:
        if _is_relative(m.base_path):
            raise ValueError(f"Expected model {m.name} to have an absolute path or URI; got "
                             f"base_path()={m.base_path}")


def _validate_no_models_change_platforms(old_models, new_models) -> None:
    """server_core.cc ValidateNoModelsChangePlatforms (reloads only)."""
    old = {m.name: _platform(m) for m in old_models}
    for m in new_models:
        if m.name in old and _platform(m) != old[m.name]:
            raise ValueError(f"Illegal to change a model's platform. For model {m.name} platform was "
                             f"{old[m.name]} and new platform requested is {_platform(m)}")


# --- File system ---------------------------------------------------------------------------------

_VERSION = re.compile(r"\s*[+-]?\d+\s*")  # absl::SimpleAtoi: blanks around, a sign, decimal digits


def _local(fs_root: Path, uri: str) -> Path | None:
    """The stand-in filesystem holds local paths only: a URI (s3://, gs://) is never found, as in our
    pods (TF Serving 2.7+ dropped s3, and the pod has no cloud credentials for TF Serving)."""
    return None if re.match(r"[a-zA-Z][0-9a-zA-Z.]*://", uri) else fs_root / uri.lstrip("/")


def _poll(models, fs_root: Path) -> tuple[dict[str, dict[int, str]] | None, dict[str, str]]:
    """sources/storage_path/file_system_storage_path_source.cc PollFileSystemForConfig: per model the
    aspired versions (version -> path), and the warnings logged. None instead of the versions when a
    base path is unreadable: the whole poll then fails and no model gets any update."""
    aspired: dict[str, dict[int, str]] = {}
    notes: dict[str, str] = {}
    for m in models:
        base = _local(fs_root, m.base_path)
        join = lambda child: f"{m.base_path.rstrip('/')}/{child}"  # noqa: E731  io::JoinPath
        # PollFileSystemForServable: FileExists(base_path), then GetChildren; either failing fails it.
        if base is None or not base.is_dir():
            return None, {m.name: "FileSystemStoragePathSource encountered a filesystem access error: "
                                  f"Could not find base path {m.base_path} for servable {m.name}"}
        policy = m.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        wanted = list(policy.specific.versions)
        if choice == "specific":
            if not wanted:  # AspireSpecificVersionsFastPath: logs a warning, aspires nothing
                aspired[m.name], notes[m.name] = {}, f"No specific versions requested for servable {m.name}."
                continue
            if all((base / str(v)).exists() for v in wanted):  # the fast path: FileExists per version
                aspired[m.name] = {v: join(v) for v in wanted}
                continue
        # IndexChildrenByVersion: names that do not parse as a number (".incoming-3") are skipped;
        # files count as much as directories; for a duplicate ("1", "01") the later name wins.
        children: dict[int, str] = {}
        for child in sorted(p.name for p in base.iterdir()):
            if _VERSION.fullmatch(child) and -2**63 <= int(child) < 2**63:
                children[int(child)] = child
        if choice == "specific":  # AspireSpecificVersions: a missing version is only warned about
            picked = [v for v in sorted(children) if v in wanted]
            if missing := sorted(set(wanted) - set(picked)):
                notes[m.name] = (f"Versions {missing} of servable {m.name}, requested as 'specific', "
                                 "were not found in the file system")
        elif choice == "all":  # AspireAllVersions
            picked = sorted(children)
        else:  # AspireLatestVersions, also for an unset policy: the newest max(num_versions, 1)
            picked = sorted(children)[-max(policy.latest.num_versions, 1):]
        aspired[m.name] = {v: join(children[v]) for v in picked}
        if not picked:
            notes[m.name] = (f"No versions of servable {m.name} found under base path {m.base_path}. "
                             "Did you forget to name your leaf directory as a number (eg. '/1/')?")
    return aspired, notes


def _load_error(fs_root: Path, path: str) -> str | None:
    """Why a version does not load (None: it does). session_bundle/oss/session_bundle_util.cc
    LoadSessionBundleOrSavedModelBundle needs MaybeSavedModelDirectory (tensorflow/cc/saved_model/
    loader.cc): saved_model.pb or saved_model.pbtxt. The file is not parsed here."""
    local = _local(fs_root, path)
    if local is not None and any((local / name).exists() for name in ("saved_model.pb", "saved_model.pbtxt")):
        return None
    return ("NOT_FOUND: Specified file path does not appear to contain a SavedModel bundle (should "
            f"have a file called `saved_model.pb`)\nSpecified file path: {path}")


# --- The server ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerState:
    """A running server: what it serves and what it remembers for the next reload."""

    flags: dict[str, object]
    fs_root: Path
    config: model_server_config_pb2.ModelServerConfig
    """ServerCore::config_: replaced before the label check, so kept even by a reload that then fails."""
    loaded: dict[str, tuple[int, ...]]
    """Model -> the versions AVAILABLE, ascending."""
    labels: dict[str, dict[str, int]]
    """ServerCore::model_labels_to_versions_: model -> label -> version."""
    failed: frozenset[tuple[str, int]] = frozenset()
    """(model, version) loads that failed; not retried while still aspired."""
    allow_version_labels: bool = True
    blocked: str = ""
    """Why the config poll thread hangs for good (a reload waiting for a model that never loads)."""
    source_config: model_server_config_pb2.ModelServerConfig | None = None
    """The config the file-system source polls with: the last one AddModelsViaModelConfigList ran for.
    A reload refused at the label check has already replaced ``config`` but never reaches the source."""

    def resolve(self, model: str, label: str) -> int:
        """The version a ``/labels/<label>`` request is served from (server_core.cc
        GetModelVersionForLabel, then the handle lookup); LookupError where that request fails."""
        version = self.labels.get(model, {}).get(label)
        if version is None:
            raise LookupError(f"Unrecognized servable version label: {label}")
        if version not in self.loaded.get(model, ()):
            raise LookupError(f"label {label} of {model} names version {version}, which is not loaded")
        return version

    def poll_files(self) -> ServerState:
        """One round of the file-system poll (--file_system_poll_wait_seconds) with the source config the
        server runs: versions that appeared load, versions that vanished unload
        (sources/storage_path/file_system_storage_path_source.cc PollFileSystemAndInvokeCallback, then
        core/availability_preserving_policy.cc). Nothing is awaited."""
        if self.flags["file_system_poll_wait_seconds"] <= 0:
            return self
        models = list((self.source_config or self.config).model_config_list.config)
        aspired, _ = _poll(models, self.fs_root)
        loaded, failed, _ = _settle(self, models, aspired)
        return replace(self, loaded=loaded, failed=failed)

    def reload(self, config_text: str) -> ServerState:
        """model_servers/server.cc PollFilesystemAndReloadConfig, then the file-system poll that picks
        up the new source config. The same text again is a plain poll round: ServerCore::ReloadConfig
        runs the whole path for an unchanged config too."""
        if self.flags["model_config_file_poll_wait_seconds"] <= 0:  # server.cc: no poll thread then
            raise ReloadError("--model_config_file_poll_wait_seconds is not positive: the config is read "
                              "once", self)
        if self.blocked:
            raise ReloadError(f"the config poll thread is still blocked: {self.blocked}", self)
        try:
            config = parse_config(config_text, str(self.flags["model_config_file"]))
        except ValueError as err:
            raise ReloadError(f"Failed to read ModelServerConfig file: {err}", self) from None
        return _reload_config(self, config)


def _update_label_map(state: ServerState, models) -> dict[str, dict[str, int]]:
    """server_core.cc UpdateModelVersionLabelMap, run by ReloadConfig BEFORE any model is added, against
    the versions AVAILABLE right now (none at startup). A label may name a version that is not
    available only with --allow_version_labels_for_unavailable_models, and then only if the label is
    new or already names that version (force_allow_any_... has no flag in main.cc)."""
    labels: dict[str, dict[str, int]] = {}
    for m in models:
        available = state.loaded.get(m.name, ())
        for label, version in sorted(m.version_labels.items()):
            existing = state.labels.get(m.name, {}).get(label)
            allow_unavailable = (state.flags["allow_version_labels_for_unavailable_models"]
                                 and existing in (None, version))
            if not allow_unavailable and version not in available:
                raise ReloadError(f"Request to assign label to version {version} of model {m.name}, "
                                  "which is not currently available for inference", state)
            labels.setdefault(m.name, {})[label] = version
    # ServerCore::Options::allow_version_labels defaults to true and neither main.cc nor server.cc
    # changes it, so the stock binary always allows labels; kept for completeness.
    if not state.allow_version_labels and labels:
        raise ReloadError("Model version labels are not currently allowed by the server.", state)
    return labels


def _settle(state: ServerState, models, aspired) -> tuple[dict, frozenset, dict]:
    """What the manager serves once the source's aspired versions are handled: loaded versions,
    failed versions, and the new load errors. ``aspired`` None: the source emitted nothing."""
    loaded, failed, errors = {}, set(), {}
    for m in models:
        old = set(state.loaded.get(m.name, ()))
        if aspired is None:
            loaded[m.name] = tuple(sorted(old))
            failed |= {f for f in state.failed if f[0] == m.name}
            continue
        want = aspired[m.name]
        ok = set()
        for version, path in want.items():
            if version in old:  # already serving: stays loaded
                ok.add(version)
            elif (m.name, version) in state.failed:
                # core/aspired_versions_manager.cc ProcessAspiredVersionsRequest re-adds an errored
                # version only with enable_reload_servables_with_error, which server.cc leaves off.
                failed.add((m.name, version))
            elif error := _load_error(state.fs_root, path):
                failed.add((m.name, version))
                errors[(m.name, version)] = error
            else:
                ok.add(version)
        # core/availability_preserving_policy.cc GetNextAction: versions no longer aspired are unloaded
        # once an aspired one serves, or when nothing is aspired; otherwise the newest of them stays.
        unaspired = old - set(want)
        keep = {max(unaspired)} if want and not ok and unaspired else set()
        loaded[m.name] = tuple(sorted(ok | keep))
    return loaded, frozenset(failed), errors


def _await(state: ServerState, names: list[str], aspired, notes: dict, errors: dict, first: bool) -> None:
    """At startup core/load_servables_fast.cc ConnectSourcesWithFastInitialLoad, on a reload
    server_core.cc WaitUntilModelsAvailable (new models only): wait, with no timeout
    (servable_state_waiter_timeout is InfiniteDuration, server_core.h), until ServableRequest::Latest
    of each model reaches AVAILABLE or END."""
    never = [n for n in names if not (aspired or {}).get(n)]
    if never:  # no version aspired: no state ever arrives, the wait never returns
        if aspired is None:  # the poll failed (one note) or did not run (none)
            why = next(iter(notes.values()), "file-system polling is off")
        else:
            why = "; ".join(notes[n] for n in never)
        what = "the server never finishes starting" if first else "this reload never returns"
        raise ReloadError(f"{what}: it waits for ServableRequest::Latest of {', '.join(never)} and no "
                          f"version is aspired ({why})", replace(state, blocked="" if first else why))
    # core/servable_state_monitor.cc HasAnyServableInStreamReachedState takes the lowest version in
    # AVAILABLE or END; whether a good or a failed version settles first is a race, so any failure counts.
    broken = sorted(k for k in errors if k[0] in names)
    if broken:
        kind = "servable(s)" if first else "model(s)"
        # "{" + per failure "{" ServableId::DebugString() " due to error: ..." "}, " + "}"
        entries = "".join(f"{{{{name: {n} version: {v}}} due to error: {errors[(n, v)]}}}, "
                          for n, v in broken)
        raise ReloadError(f"{len(broken)} {kind} did not become available: {{{entries}}}", state)


def _reload_config(state: ServerState, new) -> ServerState:
    """model_servers/server_core.cc ServerCore::ReloadConfig, in its order."""
    old_case, new_case = state.config.WhichOneof("config"), new.WhichOneof("config")
    first = old_case is None
    if not (first or state.config == new or old_case == new_case == "model_config_list"):
        raise ReloadError("Cannot transition to requested config. It is only legal to transition from "
                          "one ModelConfigList to another.", state)
    if new_case is None:  # "Taking no action for empty config."
        return state
    models = list(new.model_config_list.config)
    try:
        _validate_model_config_list(models)
        if not first:
            _validate_no_models_change_platforms(state.config.model_config_list.config, models)
    except ValueError as err:
        raise ReloadError(str(err), state) from None
    state = replace(state, config=new)  # config_ = new_config, before anything else can fail
    state = replace(state, labels=_update_label_map(state, models))
    if new_case == "custom_model_config":  # server.cc LoadCustomModelConfig: LOG(FATAL)
        raise ReloadError("ModelServer does not yet support custom model config.", state)
    # AddModelsViaModelConfigList -> CreateStoragePathRoutes: GetPlatform, then a router port for the
    # platform. server.cc builds the platform map with CreateTensorFlowPlatformConfigMap
    # (model_servers/platform_config_util.cc): one entry, "tensorflow".
    for m in models:
        try:
            platform = _platform(m)
        except ValueError as err:
            raise ReloadError(str(err), state) from None
        if platform != TENSORFLOW:
            raise ReloadError(f"Model {m.name} requests unsupported platform {platform}", state)
    state = replace(state, source_config=new)  # AddModelsViaModelConfigList reconfigures the source
    # FileSystemStoragePathSource::SetAspiredVersionsCallback: a positive interval polls periodically,
    # 0 polls once (at startup), a negative one never.
    poll_seconds = state.flags["file_system_poll_wait_seconds"]
    polls = poll_seconds > 0 or (first and poll_seconds == 0)
    aspired, notes = _poll(models, state.fs_root) if polls else (None, {})
    loaded, failed, errors = _settle(state, models, aspired)
    # NewModelNamesInSourceConfig: a reload waits only for models new to the source config.
    awaited = [m.name for m in models if first or m.name not in state.loaded]
    state = replace(state, loaded=loaded, failed=failed)
    _await(state, awaited, aspired, notes, errors, first)
    return state


def start(args: list[str], config_text: str, fs_root: Path, *,
          allow_version_labels: bool = True) -> ServerState:
    """main.cc, then model_servers/server.cc Server::BuildAndStart in its order; ServerCore::Create
    ends with the first ReloadConfig."""
    flags = parse_flags(args)
    if flags["port"] == 0 and not flags["grpc_socket_path"]:
        raise StartupError("At least one of server_options.grpc_port or server_options.grpc_socket_path "
                           "must be set.")
    if not flags["model_base_path"] and not flags["model_config_file"]:
        raise StartupError("Both server_options.model_base_path and server_options.model_config_file are "
                           "empty!")
    if not flags["model_config_file"]:
        raise StartupError("not modelled: --model_base_path without --model_config_file "
                           "(BuildSingleModelConfig)")
    try:
        config = parse_config(config_text, str(flags["model_config_file"]))
    except ValueError as err:
        raise StartupError(str(err)) from None
    if flags["platform_config_file"]:
        raise StartupError("not modelled: --platform_config_file replaces the tensorflow-only platform map")
    if flags["batching_parameters_file"] and not flags["enable_batching"]:
        raise StartupError("server_options.batching_parameters_file is set without setting "
                           "server_options.enable_batching to true.")
    state = ServerState(flags, Path(fs_root), model_server_config_pb2.ModelServerConfig(), {}, {},
                        allow_version_labels=allow_version_labels)
    try:
        state = _reload_config(state, config)
    except ReloadError as err:
        raise StartupError(str(err)) from None
    if flags["rest_api_port"] and flags["rest_api_port"] == flags["port"]:
        # server.cc only logs this and runs without REST; our probes need REST, so it counts as failed.
        raise StartupError("server_options.http_port cannot be same as grpc_port. Please use a different "
                           "port for HTTP/REST API. Skipped exporting HTTP/REST API.")
    return state
