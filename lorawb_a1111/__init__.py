"""LoRA Weights Builder inside AUTOMATIC1111 and Forge: thin host code over ``lorawb_core``.

A1111/Forge import ``scripts/lorawb_a1111.py``, which imports :mod:`.extension` (callbacks, the script, the tag).
Only this package imports A1111's ``modules.*`` and its built-in Lora extension; ``lorawb_core`` and the ComfyUI side
(``__init__.py``, ``nodes/``) never import it.

* :mod:`.host` — what the running host offers (feature detection, never version strings), the checkpoint's family,
  the library service over A1111's LoRA folders;
* :mod:`.a1111_networks` — applying planned LoRAs through A1111's built-in Lora (per-module multipliers);
* :mod:`.forge_networks` — the same through Forge's patcher;
* :mod:`.extension` — the ``<lorawb:…>`` extra network, the always-on script, infotext, routes, tab and settings.
"""
