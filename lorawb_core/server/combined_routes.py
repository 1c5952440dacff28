"""Handler of ``POST /lorawb/compose/profile`` (bound by :mod:`.routes`): a stack's combined block weights saved as a
new library profile of its layout (see :mod:`lorawb_core.combined_profile` for the definition).

Body: ``{"entries": [...as /lorawb/compose/check...], "name": str, "description"?: str}``. Answers 201 with
``{"profile", "layout_id", "entries"}``; a refused stack is a 400 listing the gate's reasons, a name already used in
that layout a 409 (``field: name``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..combined_profile import save_combined_profile
from ..errors import ProfileError
from ..profiles.model import check_name
from .http import BadRequest, Conflict, body_str, json_response, read_json
from .profile_routes import body_entries, stack_entries


class CombinedProfileRoutes:
    """Save combined as profile."""

    async def save_combined_profile(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=True)
        entries = body_entries(body)
        name = body_str(body, "name", required=True, max_len=200)
        try:
            name = check_name(name)
        except ProfileError as exc:
            raise BadRequest(str(exc), field="name") from None
        description = body_str(body, "description", max_len=2000)

        def work(db) -> dict[str, Any]:
            try:
                return save_combined_profile(db, stack_entries(db, entries), name,
                                             description=description).to_dict()
            except ProfileError as exc:
                raise Conflict(str(exc), field="name") from None

        return json_response(await self.run_db(work), 201)
