"""Every error lorawb raises: one base class, messages that say what to do."""

from __future__ import annotations


class LorawbError(Exception):
    """Base of every lorawb error; ``str(err)`` is a complete sentence for the user."""


class UnreadableFile(LorawbError, OSError):
    """The file cannot be opened or read (missing, permissions, a directory)."""


class UnsupportedFormat(LorawbError, ValueError):
    """The file is not a safetensors LoRA (a pickle, a text file, another container)."""


class CorruptFile(LorawbError, ValueError):
    """The file claims to be safetensors but its header or data is damaged."""


class InvalidTensor(LorawbError, ValueError):
    """A tensor's shape or dtype does not fit what its algorithm needs."""


class UnknownLayout(LorawbError, KeyError):
    """A layout id or block id that the registry does not know."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class UsageError(LorawbError, ValueError):
    """A caller passed arguments that do not fit together."""


class InvalidValue(UsageError):
    """One named value (a search filter, an option) that cannot be used as given; ``field`` names it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TorchMissing(LorawbError, ImportError):
    """Tensor work was asked for and PyTorch is not installed (the message gives the command to install it)."""


class LibraryError(LorawbError):
    """The library database cannot be used as asked (written by a newer lorawb, damaged, not writable)."""


class NotInLibrary(LorawbError, KeyError):
    """A stable_id or path that the library does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ProfileError(LorawbError, ValueError):
    """A block-weight profile, its weights or its text form cannot be used as given (the message says why)."""


class ProfileMismatch(ProfileError):
    """A profile meets a layout of another family (or another model size) than its own."""


class ProfileNotFound(LorawbError, KeyError):
    """A profile name or id that neither the built-ins nor the library hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LoraMissing(LorawbError, FileNotFoundError):
    """A LoRA the library knows whose file is gone (moved out of the roots, deleted, on an unmounted drive)."""


class IncompatibleStack(LorawbError, ValueError):
    """LoRAs (or a LoRA and a model) that cannot be applied together; the message lists every reason."""


class HostUnsupported(LorawbError, RuntimeError):
    """The host (e.g. an older ComfyUI) lacks a mechanism a node needs; the message names the version to use."""


class BrokenLora(LorawbError, ValueError):
    """A file that reads but cannot be applied: NaN/Inf values, factors whose shapes do not multiply, rank-0
    factors, or no LoRA modules at all. ``report`` is the inspection report when there is one (its ``problems``
    list every reason)."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class OrganizeError(LorawbError):
    """Organizing a drop folder cannot go on as asked (a read-only destination, a full disk, a bad rule); the
    message says what to fix. Every file stays where it is or where the journal says it went."""


class OrganizeBusy(OrganizeError):
    """Another ``lorawb organize`` holds the library's organize lock (the message names its process)."""


class TemplateError(LorawbError, ValueError):
    """A workflow template cannot be used: the family has none, or a user template lacks our loader or an output."""


class ServerMismatch(LorawbError, ValueError):
    """A workflow names a node, model or option that the ComfyUI server does not have (the message lists them)."""


class JobNotFound(LorawbError, KeyError):
    """A batch job or batch id that the library's job table does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ComfyServerError(LorawbError):
    """A ComfyUI server did not do what the batch queue asked; ``url`` names it."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class ServerUnreachable(ComfyServerError, ConnectionError):
    """No answer from a ComfyUI server (refused, timed out, not ComfyUI): its jobs stay queued."""


class ServerFailed(ComfyServerError):
    """A ComfyUI server answered with a 5xx or broke off mid-answer: the job is retried with backoff."""


class PromptRejected(ComfyServerError, ValueError):
    """ComfyUI refused a prompt (HTTP 400): ``node_errors`` says which node and input, the job fails."""

    def __init__(self, message: str, url: str = "", node_errors: dict | None = None) -> None:
        super().__init__(message, url)
        self.node_errors = node_errors or {}
