"""The explorer's Starlette application: the JSON/PNG API and the static page.

Every endpoint is a GET that reads; a bad query parameter is a 400 naming it, an unknown
lesion, patient or slice a 404. See the README section "Lesion explorer" for the API.

Images are answered through :class:`~deeplesion.explorer.responses.ImagePool` (cache, thread
pool, ETag), off the event loop.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from deeplesion.analysis.retrieval import RetrievalError
from deeplesion.data.annotations import LESION_TYPES, Lesion
from deeplesion.data.measurement import measure
from deeplesion.data.windowing import WINDOW_PRESETS, Window, parse_window
from deeplesion.errors import DeepLesionError, ImageReadError
from deeplesion.explorer.catalog import (
    Catalog,
    NotFoundError,
    ParameterError,
    lesion_item,
    page_bounds,
    parse_filter,
)
from deeplesion.explorer.images import SliceReader, check_name, lesion_tile, window_image
from deeplesion.explorer.responses import ImagePool, SecurityHeaders
from deeplesion.review.colours import TYPE_COLOURS

STATIC_DIR = Path(str(resources.files("deeplesion.explorer") / "static"))
#: The presets the page offers (plus the row's own DICOM window).
PAGE_WINDOWS = ("lung", "mediastinum", "soft-tissue", "liver", "bone")
_FILTER_PARAMS = {
    "split",
    "type",
    "min_long_mm",
    "max_long_mm",
    "min_interval_mm",
    "max_interval_mm",
    "patient",
    "noisy",
    "q",
    "tag",
    "sort",
}


def _finite(value):
    """JSON has no NaN/inf: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class _JSON(JSONResponse):
    def render(self, content) -> bytes:
        return json.dumps(_finite(content), separators=(",", ":")).encode("utf-8")


def _error(status: int, message: str, parameter: str | None = None) -> Response:
    body: dict = {"error": message}
    if parameter:
        body["parameter"] = parameter
    return _JSON(body, status_code=status)


def _only(request: Request, allowed: set[str]) -> dict[str, str]:
    """The query as a dict; an unknown parameter (a typo) is a 400 naming it."""
    for key in request.query_params:
        if key not in allowed:
            raise ParameterError(key, f"unknown parameter; allowed: {', '.join(sorted(allowed))}")
    return {k: v for k, v in request.query_params.items() if k != "tag"}


def _int_param(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ParameterError(name, f"{text!r} is not a whole number") from None
    if value < 0:
        raise ParameterError(name, f"{value} must be >= 0")
    return value


def _window(params: dict[str, str], dicom: tuple[float, float] | None) -> Window:
    try:
        return parse_window(params.get("window", "dicom") or "dicom", dicom)
    except ValueError as exc:
        raise ParameterError("window", str(exc)) from None


def _flag(params: dict[str, str], name: str, default: bool) -> bool:
    text = params.get(name, "")
    if text == "":
        return default
    if text not in ("0", "1"):
        raise ParameterError(name, f"{text!r}: use 0 or 1")
    return text == "1"


def lesion_detail(catalog: Catalog, lesion: Lesion) -> dict:
    m = measure(lesion)
    out = lesion_item(lesion)
    out.update(
        recist_px1=list(lesion.recist_px1),
        box_px1=list(lesion.box_px1),
        diameters_px=list(lesion.diameters_px),
        location_norm=list(lesion.location_norm),
        slice_range=list(lesion.slice_range),
        spacing_mm=list(lesion.spacing_mm),
        image_size=list(lesion.image_size),
        dicom_window_hu=list(lesion.dicom_window_hu),
        sex=lesion.sex,
        age_years=lesion.age_years,
        measurement={
            "long_px": m.long_px,
            "short_px": m.short_px,
            "long_mm": m.long_mm,
            "short_mm": m.short_mm,
            "long_px_reported": m.long_px_reported,
            "short_px_reported": m.short_px_reported,
            "axes_angle_deg": m.axes_angle_deg,
            "ellipse_area_mm2": m.ellipse.area_mm2,
        },
        tags=sorted(catalog.tagged.tags_of(lesion).relevant)
        if catalog.tagged is not None and catalog.tagged.tags_of(lesion) is not None
        else [],
    )
    return out


def _track_json(track, reader: SliceReader) -> dict:
    return {
        "track_id": track.track_id,
        "is_new": track.is_new,
        "change_mm": track.change_mm,
        "observations": [
            {
                "row_index": o.lesion.row_index,
                "file_name": o.lesion.file_name,
                "study": o.study_index,
                "long_mm": o.long_mm,
                "short_mm": o.short_mm,
                "confidence": o.confidence,
                "image": reader.has(check_name(o.lesion.file_name)),
            }
            for o in track.observations
        ],
    }


def create_app(
    catalog: Catalog, reader: SliceReader, *, info: dict | None = None, png_level: int = 0
) -> Starlette:
    """The explorer app over a catalog and a slice reader. ``info`` goes into /api/meta;
    ``png_level`` is the zlib level of the slice PNGs (0: fastest, largest)."""
    meta_info = dict(info or {})

    def meta(request: Request) -> Response:
        _only(request, set())
        return _JSON(
            {
                **meta_info,
                "rows": len(catalog.lesions),
                "types": [LESION_TYPES[c] for c in sorted(LESION_TYPES) if c > 0] + ["unlabelled"],
                "splits": ["train", "val", "test"],
                "windows": {
                    name: [WINDOW_PRESETS[name].low_hu, WINDOW_PRESETS[name].high_hu]
                    for name in PAGE_WINDOWS
                },
                "tags": catalog.tagged is not None,
                "colours": TYPE_COLOURS,
            }
        )

    def lesions(request: Request) -> Response:
        params = _only(request, _FILTER_PARAMS | {"offset", "limit"})
        f = parse_filter(params, tuple(request.query_params.getlist("tag")))
        offset, limit = page_bounds(params)
        return _JSON(catalog.page(f, offset, limit))

    def lesion(request: Request) -> Response:
        _only(request, set())
        row = _int_param(request.path_params["row_index"], "row_index")
        l = catalog.lesion(row)
        first, last = l.slice_range
        numbers = range(first, last + 1)
        present = reader.present(l.series_folder, numbers)
        slices = [
            {
                "number": n,
                "name": f"{l.series_folder}_{n:03d}.png",
                "offset_mm": round((n - l.key_slice_index) * l.slice_interval_mm, 3),
                "present": ok,
                "key": n == l.key_slice_index,
            }
            for n, ok in zip(numbers, present)
        ]
        tracks, _ = catalog.tracks(l.patient_index)
        return _JSON(
            {
                "lesion": lesion_detail(catalog, l),
                "slices": slices,
                "key_present": present[l.key_slice_index - first],
                "same_slice": [lesion_item(o) for o in catalog.same_slice(l)],
                "track": _track_json(catalog.track_of(l), reader),
                "patient_tracks": len(tracks),
            }
        )

    def patient(request: Request) -> Response:
        _only(request, set())
        p = _int_param(request.path_params["patient"], "patient")
        tracks, responses = catalog.tracks(p)
        rows = sorted(
            catalog.by_patient[p], key=lambda l: (l.study_index, l.series_id, l.key_slice_index)
        )
        studies: dict[int, list[dict]] = {}
        for l in rows:
            studies.setdefault(l.study_index, []).append(lesion_item(l))
        return _JSON(
            {
                "patient": p,
                "sex": rows[0].sex,
                "studies": [{"study": s, "lesions": items} for s, items in studies.items()],
                "tracks": [_track_json(t, reader) for t in tracks],
                "responses": [
                    {
                        "study": r.study_index,
                        "category": r.category,
                        "reason": r.reason,
                        "sld_mm": r.sld_mm,
                        "baseline_mm": r.baseline_mm,
                        "nadir_mm": r.nadir_mm,
                        "new_lesions": r.new_lesions,
                        "missing_targets": r.missing_targets,
                    }
                    for r in responses
                ],
            }
        )

    def similar(request: Request) -> Response:
        params = _only(request, {"k"})
        row = _int_param(request.path_params["row_index"], "row_index")
        k = _int_param(params.get("k", "10") or "10", "k")
        if not 1 <= k <= 100:
            raise ParameterError("k", f"{k} is outside 1..100")
        found = catalog.similar(row, k)
        return _JSON(
            {
                "items": [
                    {
                        **lesion_item(n.lesion),
                        "similarity": n.similarity,
                        "image": reader.has(check_name(n.lesion.file_name)),
                    }
                    for n in found
                ]
            }
        )

    def bodymap(request: Request) -> Response:
        params = _only(request, _FILTER_PARAMS)
        f = parse_filter(params, tuple(request.query_params.getlist("tag")))
        positions = catalog.select(f)
        return _JSON(
            {
                "total": int(positions.size),
                "points": catalog.body_points(positions),
                "colours": TYPE_COLOURS,
            }
        )

    images = ImagePool(reader.responses)

    async def slice_png(request: Request) -> Response:
        params = _only(request, {"window", "overlay"})
        name = check_name(request.path_params["name"])
        overlay = _flag(params, "overlay", False)
        try:
            window: Window | None = _window(params, catalog.dicom_window(name.folder))
            bad_window = None
        except ParameterError as exc:
            window, bad_window = None, exc
        lesions = catalog.lesions_on(name.file_name) if overlay else []

        def job() -> bytes:
            raw = reader.read_raw(name)  # first: an unknown slice is a 404 whatever the window
            if bad_window is not None:
                raise bad_window
            assert window is not None
            return window_image(raw, window, lesions, overlay, png_level)

        if window is None:
            await images.run(job)  # raises the 404 or the 400
        key = ("slice", name.file_name, window, overlay and bool(lesions))
        return await images.answer(request, key, job)

    def hu_values(request: Request) -> Response:
        _only(request, set())
        name = check_name(request.path_params["name"])
        hu = reader.read_hu(name)
        rows, cols = hu.shape
        return Response(
            hu.astype("<i2").tobytes(),
            media_type="application/octet-stream",
            headers={"x-rows": str(rows), "x-cols": str(cols)},
        )

    async def crop(request: Request) -> Response:
        params = _only(request, {"window", "tile"})
        row = _int_param(request.path_params["row_index"], "row_index")
        l = catalog.lesion(row)
        tile = _int_param(params.get("tile", "128") or "128", "tile")
        if not 32 <= tile <= 512:
            raise ParameterError("tile", f"{tile} is outside 32..512")
        window = _window(params, l.dicom_window_hu)

        def job() -> bytes:
            return lesion_tile(reader.read_hu(check_name(l.file_name)), l, window, tile)

        return await images.answer(request, ("crop", row, window, tile), job)

    def tags(request: Request) -> Response:
        _only(request, set())
        terms = list(catalog.lesanet.labels.terms) if catalog.lesanet is not None else []
        return _JSON({"terms": terms})

    def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def bad_parameter(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ParameterError)
        return _error(400, str(exc), exc.parameter)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, str(exc))

    async def unreadable(request: Request, exc: Exception) -> Response:
        return _error(422, str(exc))

    routes = [
        Route("/", index),
        Route("/api/meta", meta),
        Route("/api/lesions", lesions),
        Route("/api/lesion/{row_index}", lesion),
        Route("/api/patient/{patient}", patient),
        Route("/api/similar/{row_index}", similar),
        Route("/api/bodymap", bodymap),
        Route("/api/slice/{name}", slice_png),
        Route("/api/hu/{name}", hu_values),
        Route("/api/crop/{row_index}", crop),
        Route("/api/tags", tags),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ParameterError: bad_parameter,
            NotFoundError: not_found,
            RetrievalError: not_found,
            ImageReadError: unreadable,
            DeepLesionError: unreadable,  # e.g. a malformed store file
        },
    )
    app.add_middleware(SecurityHeaders)
    return app
