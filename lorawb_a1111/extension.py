"""Everything A1111/Forge calls: the ``<lorawb:…>`` extra network, the always-on script that applies it, infotext,
the routes on the host's server, the tab and the settings. Imported by ``scripts/lorawb_a1111.py`` only.

Flow of one generation: A1111 parses ``<lorawb:…>`` tags out of the prompt and calls :class:`LorawbNetwork`'s
``activate`` (tags → :func:`lorawb_core.tag_plan.plan_tags`, the compose gate included); after every extra network is
active, :class:`LorawbScript`'s ``after_extra_networks_activate`` adds the planned LoRAs to the host's own LoRA
machinery (:mod:`.host`). A refusal stops the generation: A1111 swallows errors raised by extra networks and scripts,
so the refusal is raised from ``p.setup_conds()``, which A1111 calls right after — the UI (and the API's error
answer) shows the gate's reasons.
"""

from __future__ import annotations

import logging

import gradio as gr  # type: ignore[import-not-found]
from modules import extra_networks, script_callbacks, scripts, shared  # type: ignore[import-not-found]

from lorawb_core.errors import LorawbError
from lorawb_core.prompt_tags import INFOTEXT_KEY, TAG_NAME, parse_infotext, parse_tag
from lorawb_core.tag_plan import TagPlan, plan_tags

from . import host

log = logging.getLogger("lorawb")
SECTION = ("lorawb", "LoRA Weights Builder")
PLAN_ATTR = "lorawb_plan"
WARNING_KEY = "lorawb warning"


def _opt(name: str, default):
    return shared.opts.data.get(name, default)


class _Machinery:
    applier = None

    @classmethod
    def get(cls):
        if cls.applier is None:
            cls.applier = host.lora_machinery()
        return cls.applier


def _refuse(p, exc: BaseException) -> None:
    """Stop this generation at ``setup_conds`` with ``exc`` (A1111 shows it; the API answers with it)."""
    log.error("%s", exc)

    def refused(*args, **kwargs):
        raise exc

    p.setup_conds = refused


def _clear_refusal(p) -> None:
    if "setup_conds" in vars(p):
        del p.setup_conds


def _show(p, text: str) -> None:
    """A warning where users see it: the UI's generation info, the image's parameters (API answers carry them)."""
    log.warning("%s", text)
    if hasattr(p, "comment"):
        p.comment(f"lorawb: {text}")
    previous = p.extra_generation_params.get(WARNING_KEY)
    if not previous or text not in previous:  # a hires pass activates the tags again
        p.extra_generation_params[WARNING_KEY] = f"{previous} {text}" if previous else text
    try:
        gr.Warning(f"lorawb: {text}")
    except Exception:  # outside a Gradio request (API calls): the comment and the log carry it
        pass


class LorawbNetwork(extra_networks.ExtraNetwork):
    """``<lorawb:ID_OR_NAME:STRENGTH[:WEIGHTS]>``: read and gate the tags of this batch (applied by the script)."""

    def __init__(self) -> None:
        super().__init__(TAG_NAME)

    def activate(self, p, params_list):
        setattr(p, PLAN_ATTR, None)
        _clear_refusal(p)
        if not params_list:
            return
        try:
            tags = [parse_tag(params.items) for params in params_list]
            family = host.model_family(getattr(p, "sd_model", None) or shared.sd_model)
            missing_ok = bool(_opt("lorawb_missing_ok", False))
            plan = host.Library.service().with_db(plan_tags, tags, model_family=family, missing_ok=missing_ok)
            _Machinery.get()
        except LorawbError as exc:
            _refuse(p, exc)
            return
        for warning in plan.warnings:
            _show(p, warning)
        setattr(p, PLAN_ATTR, plan)
        if plan.loras:
            p.extra_generation_params[INFOTEXT_KEY] = plan.infotext()

    def deactivate(self, p):
        """Nothing to undo: the host's next LoRA load replaces the loaded networks (ours included)."""


class LorawbScript(scripts.Script):
    """Always on, no UI: applies the batch's plan after the host's own LoRAs are loaded."""

    def title(self):
        return "LoRA Weights Builder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_extra_networks_activate(self, p, *args, **kwargs):
        plan = getattr(p, PLAN_ATTR, None) or TagPlan([], [], None)
        try:  # without tags, only an applier that ran before has something to forget
            applier = _Machinery.get() if plan.loras else _Machinery.applier
            notes = applier.apply(plan) if applier is not None else []
        except LorawbError as exc:
            _refuse(p, exc)
            return
        for note in notes:
            log.info("%s", note)


def _on_step(params) -> None:
    applier = _Machinery.applier
    if applier is not None:
        applier.on_step(int(params.sampling_step))


def _on_infotext_pasted(infotext: str, params: dict) -> None:
    """Put the recorded tags back into the prompt when the pasted prompt lost them (e.g. edited by hand)."""
    recorded = params.get(INFOTEXT_KEY)
    if not recorded or f"<{TAG_NAME}:" in str(params.get("Prompt", "")):
        return
    try:
        tags = parse_infotext(recorded)
    except LorawbError as exc:
        log.warning("lorawb: the pasted %s field cannot be read: %s", INFOTEXT_KEY, exc)
        return
    params["Prompt"] = str(params.get("Prompt", "")) + "\n" + "".join(t.prompt_text() for t in tags)


def _on_before_ui() -> None:
    extra_networks.register_extra_network(LorawbNetwork())


def _on_app_started(demo, app) -> None:
    from lorawb_core.server.asgi import mount_routes
    from lorawb_core.server.http import Security

    service = host.Library.service()
    security = Security.for_hosts(host.listen_hosts(shared.cmd_opts))
    mount_routes(app, service, security=security, hub=host.Library.hub())
    log.info("lorawb: routes under /lorawb/ on this server (library %s)", service.db_path)
    if _opt("lorawb_scan_on_start", True):
        host.Library.start_scan()


def _on_ui_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.HTML('<iframe id="lorawb-frame" src="lorawb/ui" title="LoRA Weights Builder" '
                'style="width:100%;height:calc(100vh - 160px);min-height:600px;border:0"></iframe>')
    return [(tab, "LoRA WB", "lorawb")]


def _on_ui_settings() -> None:
    options = {
        "lorawb_missing_ok": shared.OptionInfo(
            False, "A <lorawb:…> tag whose file is missing: generate without it and show a warning (off: stop with "
                   "an error)"),
        "lorawb_scan_on_start": shared.OptionInfo(
            True, "Scan the LoRA folders (--lora-dir) into the library when the server starts"),
    }
    for key, info in options.items():
        info.section = SECTION
        shared.opts.add_option(key, info)


def register() -> None:
    """Hook every callback (called once, when A1111 imports the script file)."""
    problem = host.missing_features()
    if problem:
        print(problem)  # noqa: T201 - one line in the console at start, where A1111 users look
    script_callbacks.on_before_ui(_on_before_ui)
    script_callbacks.on_app_started(_on_app_started)
    script_callbacks.on_ui_tabs(_on_ui_tabs)
    script_callbacks.on_ui_settings(_on_ui_settings)
    script_callbacks.on_cfg_denoiser(_on_step)
    script_callbacks.on_infotext_pasted(_on_infotext_pasted)
