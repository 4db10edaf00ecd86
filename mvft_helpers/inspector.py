"""An ipywidgets inspector for the synthetic store: look, filter, accept, reject, edit.

    from mvft_helpers.inspector import Inspector
    ui = Inspector("work/.../store.jsonl", world_root=...)   # world_root: toy ground truth (optional)
    ui.widget                                                # display it in a notebook

Decisions go to the curation file beside the store (never into the store). The widget logic is
plain Python over ipywidgets objects, so tests click its buttons without a browser.
"""
from __future__ import annotations

import io
from pathlib import Path

import ipywidgets as W

from . import toylang as tl
from . import toyworld as tw
from .quality import modification_kind, record_checks
from .synthesis import SyntheticStore

ALL = "(all)"


class Inspector:
    def __init__(self, store_path, world_root=None, image_size: int = 160):
        self.store = SyntheticStore(store_path)
        self.gt = None
        if world_root is not None:
            from .world import load_ground_truth
            self.gt = load_ground_truth(world_root)
        self.image_size = image_size
        self.records = self.store.curated_records(accepted_only=False)
        self.kinds = sorted({modification_kind(r["modification"]) for r in self.records if r.get("modification")})
        self.kind = W.Dropdown(options=[ALL] + self.kinds, value=ALL, description="kind")
        self.status = W.Dropdown(options=[ALL, "accepted", "rejected"], value=ALL, description="status")
        self.prev_button = W.Button(description="◀ previous")
        self.next_button = W.Button(description="next ▶")
        self.accept_button = W.Button(description="accept", button_style="success")
        self.reject_button = W.Button(description="reject", button_style="danger")
        self.edit_button = W.Button(description="save edit", button_style="info")
        self.position = W.Label()
        self.image = W.Image(format="png", width=image_size, height=image_size)
        self.truth = W.Image(format="png", width=image_size, height=image_size)
        self.caption = W.Textarea(description="caption", layout=W.Layout(width="95%"))
        self.modification = W.Textarea(description="modification", layout=W.Layout(width="95%"))
        self.target = W.Textarea(description="target", layout=W.Layout(width="95%"))
        self.flags = W.HTML()
        self.message = W.HTML()
        self.index = 0
        self.kind.observe(lambda _: self._refilter(), names="value")
        self.status.observe(lambda _: self._refilter(), names="value")
        self.prev_button.on_click(lambda _: self.move(-1))
        self.next_button.on_click(lambda _: self.move(1))
        self.accept_button.on_click(lambda _: self.decide("accept"))
        self.reject_button.on_click(lambda _: self.decide("reject"))
        self.edit_button.on_click(lambda _: self.save_edit())
        images = [W.VBox([W.HTML("<b>image</b>"), self.image])]
        if self.gt is not None:
            images.append(W.VBox([W.HTML("<b>ground-truth target</b>"), self.truth]))
        self.widget = W.VBox([
            W.HBox([self.kind, self.status, self.position]),
            W.HBox(images + [W.VBox([self.flags])]),
            self.caption, self.modification, self.target,
            W.HBox([self.prev_button, self.next_button, self.accept_button, self.reject_button,
                    self.edit_button]),
            self.message])
        self._refilter()

    # -- state ------------------------------------------------------------------------------
    def _refilter(self) -> None:
        self.visible = [r for r in self.records
                        if (self.kind.value == ALL or modification_kind(r.get("modification") or "") == self.kind.value)
                        and (self.status.value == ALL or r["status"] == self.status.value)]
        self.index = 0
        self.show()

    @property
    def current(self) -> dict | None:
        return self.visible[self.index] if self.visible else None

    def move(self, step: int) -> None:
        if self.visible:
            self.index = (self.index + step) % len(self.visible)
        self.show()

    def show(self) -> None:
        rec = self.current
        self.position.value = f"{self.index + 1 if rec else 0} / {len(self.visible)}"
        if rec is None:
            self.flags.value = "<i>no record matches the filters</i>"
            return
        self.image.value = _png(Path(rec["image"]).read_bytes(), self.image_size)
        self.caption.value = rec.get("caption") or ""
        self.modification.value = rec.get("modification") or ""
        self.target.value = rec.get("target") or ""
        lines = [f"status: <b>{rec['status']}</b>" + (f" ({rec['reason']})" if rec.get("reason") else "")]
        if self.gt is not None:
            scene = self.gt.scene(rec["image"])
            checks = record_checks(rec, scene)
            mod = tl.interpret(scene, rec.get("modification") or "")
            if mod is not None:
                self.truth.value = _png_image(tw.render(tw.apply_modification(scene, mod), 64), self.image_size)
            bad = [k for k in ("caption_invented", "caption_lost", "target_invented", "target_lost",
                               "target_unchanged") if checks[k]]
            if not checks["mod_understood"]:
                bad.append("modification_not_understood")
            lines.append("detected errors: " + (", ".join(bad) if bad else "none"))
        self.flags.value = "<br>".join(lines)

    # -- decisions ----------------------------------------------------------------------------
    def decide(self, action: str) -> None:
        rec = self.current
        if rec is None:
            return
        self.store.curate(rec["id"], action)
        rec["status"] = "accepted" if action == "accept" else "rejected"
        self.message.value = f"{action}ed {rec['id']}"
        self.move(1)

    def save_edit(self) -> None:
        rec = self.current
        if rec is None:
            return
        edits = {k: getattr(self, k).value.strip() for k in ("caption", "modification", "target")
                 if getattr(self, k).value.strip() != (rec.get(k) or "")}
        if not edits:
            self.message.value = "nothing changed"
            return
        self.store.curate(rec["id"], "edit", **edits)
        rec.update(edits)
        self.message.value = f"saved edit of {', '.join(edits)} for {rec['id']}"


def _png(data: bytes, size: int) -> bytes:
    from PIL import Image
    return _png_image(Image.open(io.BytesIO(data)).convert("RGB"), size)


def _png_image(img, size: int) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    img.resize((size, size), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()
