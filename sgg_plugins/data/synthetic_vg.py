"""A small synthetic scene-graph dataset in the file layout of SGB's Visual Genome split.

``write_synthetic_vg(out_dir)`` writes what SGB's ``VGDataset`` reads:

* ``image_data.json``: one ``{image_id, width, height, ...}`` per image, in the h5's image order;
* ``VG-SGG-dicts-with-attri.json``: ``label_to_idx`` / ``predicate_to_idx`` / ``attribute_to_idx``
  (1-based, 0 is background and is added by the host), their inverses keyed by strings, and the
  ``object_count`` / ``predicate_count`` / ``attribute_count`` fields of the real file;
* ``VG-SGG-with-attri.h5``: per image ``split`` (0 train, 2 test) and inclusive
  ``img_to_first_box`` / ``img_to_last_box`` / ``img_to_first_rel`` / ``img_to_last_rel`` (-1 when
  an image has none); per box ``labels`` (N, 1), ``attributes`` (N, 10), ``boxes_1024`` (N, 4:
  centre x, centre y, width, height on a canvas whose longest side is 1024); per relation
  ``relationships`` (R, 2, global box rows) and ``predicates`` (R, 1). Dtypes are those of the real
  file (int32 for the index, split, box and relationship arrays, int64 for labels, attributes and
  predicates);
* ``VG_100K/<image_id>.jpg``: the rendered images;
* ``paths_catalog.py``: a ``DatasetCatalog`` serving ``VG_stanford_filtered_with_attribute_{train,
  val,test}`` (the names of SGB's stock config) from this folder, with this dataset's validation
  size, to pass as ``PATHS_CATALOG``;
* ``dataset.opts``: the config opts that depend on this dataset (``PATHS_CATALOG`` and the class
  counts), one ``KEY VALUE`` per line, to append to the host's command line;
* ``stats.json``: the object class and predicate counts of the train / val / test splits as the
  host splits them (most frequent first), the most / least frequent training predicate ratio and
  the settings the data was made with.

Two presets (``--preset``): ``default``, 160 small scenes with 10 predicates for a run in minutes,
and ``bench``, 4,000 images with all 21 predicates, a training tail as steep as Visual Genome's
(most / least frequent about 80 at seed 0), rare near-synonyms ('beside', 'over', 'with') and a
scene type per image (home, park, street, shown by one marker object) that decides some predicates
between the same two classes in the same geometry ('holding' / 'carrying', 'watching' / 'playing
with' / 'walking', 'throwing'), so that object context matters.

Scenes are built from templates (an object on a support, a person wearing / holding things, two
objects side by side, one object above another, one object partly hiding another), so predicates
follow geometry and class roles and their frequencies are long-tailed, with near-synonyms
('on' / 'on top of', 'near' / 'next to') that a relation model can only tell apart by their
statistics. Each object class has its own shape, texture and colour, so an object detector or
classifier has something to learn too. Boxes are chosen on the 1024 canvas with even integer
widths and heights, so the host's conversion back to corners is exact, and drawn at
``box / 1024 * max(width, height)`` pixels, where the host puts them.

Everything is drawn from one ``numpy`` generator seeded by ``seed``: the same seed gives the same
bytes in every file.
"""

import json
import os
import sys
from collections import Counter

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BOX_SCALE = 1024  # the canvas size SGB's boxes_1024 refer to (the longest image side)
MAX_ATTRIBUTES = 10  # width of the real file's attributes array
# SGB skips these file names for every dataset (corrupted Visual Genome images): never use them.
HOST_SKIPPED_IMAGE_IDS = frozenset({1592, 1722, 4616, 4617})
TRAIN_SPLIT, TEST_SPLIT = 0, 2

# Object vocabulary with the role each class plays in the scene templates. A dataset with k classes
# uses the first k: the first four cover the roles the two most common templates need.
OBJECT_VOCABULARY = [
    ("man", "person"), ("table", "support"), ("cup", "holdable"), ("hat", "wearable"),
    ("dog", "animal"), ("tree", "backdrop"), ("shirt", "wearable"), ("chair", "support"),
    ("book", "holdable"), ("lamp", "hanging"), ("woman", "person"), ("ball", "holdable"),
    ("car", "backdrop"), ("bottle", "holdable"), ("window", "backdrop"), ("cat", "animal"),
    ("bag", "holdable"), ("clock", "hanging"), ("bench", "support"), ("jacket", "wearable"),
]
MIN_OBJECT_CLASSES = 4

# Predicates from the most to the least frequent (by construction of the templates). A dataset
# with k predicates keeps the first k; a dropped one is relabelled with its parent (a
# near-synonym or a more general predicate), as a coarser annotation scheme would.
PREDICATE_VOCABULARY = [
    "on", "has", "near", "wearing", "holding", "next to", "on top of", "above", "under",
    "behind", "in front of", "left of",
    # Only the bench preset's scenes produce these (context-dependent and rare near-synonyms).
    "carrying", "walking", "playing with", "watching", "sitting on", "throwing", "beside", "with", "over",
]
PREDICATE_PARENT = {
    "has": "on", "near": "on", "wearing": "has", "holding": "has", "next to": "near",
    "on top of": "on", "above": "near", "under": "near", "behind": "near", "in front of": "near",
    "left of": "next to",
    "carrying": "holding", "walking": "near", "playing with": "near", "watching": "near",
    "sitting on": "on", "throwing": "holding", "beside": "next to", "with": "has", "over": "above",
}
DEFAULT_PREDICATES = 12  # the default scenes produce the first 12 predicates only

SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "hexagon", "trapezoid")
TEXTURES = ("plain", "striped", "banded", "dotted", "checkered")
PALETTE = {
    "red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40),
    "purple": (130, 50, 170), "orange": (235, 130, 30), "brown": (120, 75, 40),
    "pink": (235, 120, 170), "gray": (120, 120, 120), "teal": (30, 150, 150),
}
COLOUR_NAMES = tuple(PALETTE)

# Templates and how often each starts a scene slot. The first object of every image comes from a
# template whose relations join overlapping boxes, so every image survives the host's
# filter_non_overlap (SGCls/SGDet training with REQUIRE_BOX_OVERLAP).
TEMPLATE_WEIGHTS = {"support": 0.34, "person": 0.30, "pair": 0.18, "above": 0.10, "occlusion": 0.08}
OVERLAPPING_TEMPLATES = ("support", "person", "occlusion")
SLOTS_PER_IMAGE = {1: 0.35, 2: 0.45, 3: 0.20}


def _pick(rng, weights):
    """One key of ``weights`` (a dict of key -> probability, normalised here)."""
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[rng.choice(len(keys), p=p / p.sum())]


class _Canvas:
    """Box geometry on the 1024-scale canvas of one image.

    ``x_max`` / ``y_max`` are the last usable 1024-scale coordinates: a box ending there maps back
    to at most ``width - 1`` / ``height - 1`` pixels, so the host's clip_to_image never cuts it.
    """

    def __init__(self, width, height):
        scale = BOX_SCALE / max(width, height)
        self.x_max = int((width - 1) * scale)
        self.y_max = int((height - 1) * scale)

    def box(self, x1, y1, w, h):
        """(x1, y1, x2, y2) integers inside the canvas, with even width and height >= 8.

        Even sizes make the h5's integer centre exact, so the host recovers these corners.
        """
        x1 = int(np.clip(round(x1), 0, self.x_max - 8))
        y1 = int(np.clip(round(y1), 0, self.y_max - 8))
        w = max(8, 2 * int(min(w, self.x_max - x1) // 2))
        h = max(8, 2 * int(min(h, self.y_max - y1) // 2))
        return (x1, y1, x1 + w, y1 + h)


class _SceneBuilder:
    """Fills the slots of one image with template objects and relations.

    Objects are (class name, box, depth); relations are (subject, object, predicate name) over
    indices into ``objects``. Depth orders the drawing: larger is drawn later (in front).
    """

    def __init__(self, rng, canvas, roles):
        self.rng = rng
        self.canvas = canvas
        self.roles = roles
        self.objects = []
        self.relations = []

    def uniform(self, low, high):
        return float(self.rng.uniform(low, high))

    def add(self, role_names, box, depth):
        names = [name for role in role_names for name in self.roles.get(role, [])]
        self.objects.append((names[self.rng.integers(len(names))], box, depth))
        return len(self.objects) - 1

    def relate(self, subject, obj, predicate):
        self.relations.append((subject, obj, predicate))

    def support(self, x0, x1):
        """One or two holdable objects resting on a support: 'on' / 'on top of', sometimes 'under'."""
        sw, H = x1 - x0, self.canvas.y_max
        tw, th = sw * self.uniform(0.6, 0.95), H * self.uniform(0.18, 0.3)
        tx, ty = x0 + self.uniform(0, sw - tw), H - th - H * self.uniform(0.02, 0.12)
        support = self.add(["support"], self.canvas.box(tx, ty, tw, th), 0)
        num_items = 2 if self.rng.random() < 0.3 else 1
        items = []
        for k in range(num_items):
            lane_w = tw / num_items
            iw, ih = lane_w * self.uniform(0.35, 0.75), H * self.uniform(0.12, 0.28)
            ix = tx + k * lane_w + self.uniform(0, lane_w - iw)
            iy = ty - ih * self.uniform(0.8, 0.92)  # its bottom sinks into the support's top
            item = self.add(["holdable"], self.canvas.box(ix, iy, iw, ih), 1)
            self.relate(item, support, _pick(self.rng, {"on": 0.75, "on top of": 0.25}))
            if self.rng.random() < 0.15:
                self.relate(support, item, "under")
            items.append(item)
        if num_items == 2:
            self.relate(items[0], items[1], _pick(self.rng, {"near": 0.5, "next to": 0.3, "left of": 0.2}))

    def person(self, x0, x1):
        """A person wearing a hat or a garment and/or holding something at their side."""
        sw, H = x1 - x0, self.canvas.y_max
        pw, ph = sw * self.uniform(0.3, 0.45), H * self.uniform(0.5, 0.75)
        px, py = x0 + self.uniform(0.05 * sw, 0.6 * sw - pw * 0.5), H - ph - H * self.uniform(0.02, 0.1)
        person = self.add(["person"], self.canvas.box(px, py, pw, ph), 1)
        has_wearable = bool(self.roles.get("wearable")) and self.rng.random() < 0.8
        has_holdable = bool(self.roles.get("holdable")) and (not has_wearable or self.rng.random() < 0.6)
        if has_wearable:
            names = self.roles["wearable"]
            name = names[self.rng.integers(len(names))]
            if name == "hat":
                ww, wh = pw * self.uniform(0.5, 0.7), ph * self.uniform(0.12, 0.18)
                wx, wy = px + (pw - ww) / 2, py - wh * 0.3
            else:
                ww, wh = pw * self.uniform(0.8, 1.0), ph * self.uniform(0.3, 0.4)
                wx, wy = px + (pw - ww) / 2, py + ph * 0.25
            self.objects.append((name, self.canvas.box(wx, wy, ww, wh), 2))
            wearable = len(self.objects) - 1
            self.relate(person, wearable, _pick(self.rng, {"wearing": 0.55, "has": 0.45}))
            if self.rng.random() < 0.2:
                self.relate(wearable, person, "on")
        if has_holdable:
            hw, hh = pw * self.uniform(0.35, 0.6), ph * self.uniform(0.15, 0.25)
            hx, hy = px + pw - hw * 0.4, py + ph * self.uniform(0.35, 0.55)
            held = self.add(["holdable"], self.canvas.box(hx, hy, hw, hh), 2)
            self.relate(person, held, _pick(self.rng, {"holding": 0.6, "has": 0.4}))

    def pair(self, x0, x1):
        """Two objects side by side with a gap: 'near' / 'next to' / 'left of'."""
        sw, H = x1 - x0, self.canvas.y_max
        aw, bw, gap = sw * self.uniform(0.25, 0.4), sw * self.uniform(0.25, 0.4), sw * self.uniform(0.04, 0.15)
        ax = x0 + self.uniform(0, max(sw - aw - bw - gap, 1.0))
        bottom = H * self.uniform(0.75, 0.97)
        ah, bh = H * self.uniform(0.15, 0.35), H * self.uniform(0.15, 0.35)
        pool = ["animal", "holdable", "support", "backdrop"]
        a = self.add(pool, self.canvas.box(ax, bottom - ah, aw, ah), 1)
        b = self.add(pool, self.canvas.box(ax + aw + gap, bottom - bh + H * self.uniform(-0.03, 0.03), bw, bh), 1)
        self.relate(a, b, _pick(self.rng, {"near": 0.5, "next to": 0.3, "left of": 0.2}))

    def above(self, x0, x1):
        """A hanging object above a grounded one, with a vertical gap: 'above', or 'under' reversed."""
        sw, H = x1 - x0, self.canvas.y_max
        tw, th = sw * self.uniform(0.2, 0.4), H * self.uniform(0.12, 0.2)
        bw, bh = sw * self.uniform(0.4, 0.8), H * self.uniform(0.2, 0.35)
        bx = x0 + self.uniform(0, sw - bw)
        top = self.add(["hanging"], self.canvas.box(bx + self.uniform(0, bw - tw), H * self.uniform(0.03, 0.18), tw, th), 1)
        bottom = self.add(["support", "animal", "backdrop"], self.canvas.box(bx, H - bh - H * self.uniform(0.02, 0.1), bw, bh), 1)
        if self.rng.random() < 0.8:
            self.relate(top, bottom, "above")
        else:
            self.relate(bottom, top, "under")

    def occlusion(self, x0, x1):
        """A large backdrop partly hidden by an animal or a person: 'behind' / 'in front of'."""
        sw, H = x1 - x0, self.canvas.y_max
        bw, bh = sw * self.uniform(0.55, 0.9), H * self.uniform(0.45, 0.7)
        bx, by = x0 + self.uniform(0, sw - bw), H - bh - H * self.uniform(0.08, 0.15)
        back = self.add(["backdrop"], self.canvas.box(bx, by, bw, bh), 0)
        fw, fh = bw * self.uniform(0.35, 0.6), bh * self.uniform(0.4, 0.7)
        front_bottom = min(by + bh + H * self.uniform(0.02, 0.08), H)
        front = self.add(["animal", "person"], self.canvas.box(bx + self.uniform(0, bw - fw), front_bottom - fh, fw, fh), 1)
        if self.rng.random() < 0.55:
            self.relate(back, front, "behind")
        else:
            self.relate(front, back, "in front of")


# ---------------------------------------------------------------- the bench preset's scenes
#
# Every bench image has a scene type, shown by one marker object at the back of the image: a
# window (home), a tree (park) or a car (street); these three classes appear in no other role, so
# the marker is the only cue to the scene. Some predicates between the same two classes with the
# same geometry then depend on the scene: a person with a cup at their side is "holding" it at
# home and "carrying" it in the street; a person beside an animal is "watching" it at home,
# "playing with" it in the park and "walking" it in the street; a ball at a person's side in the
# park is "throwing". Pairwise features (the two classes, their boxes and union) cannot tell these
# apart; an object context that sees the marker can. That is what the issue asks the benchmark to
# measure: "predicates whose correct choice depends on the other objects in the scene".

SCENE_WEIGHTS = {"home": 0.45, "park": 0.30, "street": 0.25}
SCENE_MARKERS = {"home": "window", "park": "tree", "street": "car"}
BENCH_TEMPLATE_WEIGHTS = {"support": 0.27, "person": 0.30, "person_animal": 0.14, "pair": 0.14,
                          "above": 0.08, "occlusion": 0.05, "sitting": 0.02}
BENCH_OVERLAPPING_TEMPLATES = ("support", "person", "occlusion", "sitting")
BENCH_SLOTS_PER_IMAGE = {1: 0.2, 2: 0.5, 3: 0.3}
# The predicate a person-with-held-object or person-with-animal pair takes in each scene; the
# rest of the time (CONTEXT_NOISE) an annotator wrote the generic one, as in Visual Genome.
HELD_BY_SCENE = {"home": "holding", "park": "holding", "street": "carrying"}
ANIMAL_BY_SCENE = {"home": "watching", "park": "playing with", "street": "walking"}
CONTEXT_NOISE = 0.12


class _BenchSceneBuilder(_SceneBuilder):
    """The default templates plus scene context, animals with people, sitting, and rare synonyms."""

    def __init__(self, rng, canvas, roles, scene):
        # Backdrops are the scene's marker only, so every backdrop in an image names its scene.
        roles = dict(roles, backdrop=[SCENE_MARKERS[scene]])
        super().__init__(rng, canvas, roles)
        self.scene = scene

    def marker(self):
        """The scene's marker at the back of the image, in the upper part; it takes no relation."""
        W, H = self.canvas.x_max, self.canvas.y_max
        mw, mh = W * self.uniform(0.18, 0.32), H * self.uniform(0.2, 0.32)
        self.objects.append((SCENE_MARKERS[self.scene], self.canvas.box(self.uniform(0, W - mw), H * self.uniform(0.01, 0.08), mw, mh), -1))

    def _held_predicate(self, name):
        if self.rng.random() < CONTEXT_NOISE:
            return "has"
        if self.scene == "park" and name == "ball":
            return "throwing"
        return HELD_BY_SCENE[self.scene]

    def person(self, x0, x1):
        """The default person, with the held object's predicate set by the scene and a rare 'with'."""
        first = len(self.relations)
        super().person(x0, x1)
        for k in range(first, len(self.relations)):
            subject, obj, predicate = self.relations[k]
            if predicate in ("holding", "has") and self.objects[obj][0] in self.roles.get("holdable", []):
                self.relations[k] = (subject, obj, self._held_predicate(self.objects[obj][0]))
            elif predicate == "has" and self.rng.random() < 0.1:
                self.relations[k] = (subject, obj, "with")

    def person_animal(self, x0, x1):
        """A person and an animal side by side: 'watching' / 'playing with' / 'walking' by scene."""
        sw, H = x1 - x0, self.canvas.y_max
        pw, ph = sw * self.uniform(0.25, 0.38), H * self.uniform(0.5, 0.72)
        px = x0 + self.uniform(0.02 * sw, 0.45 * sw)
        person = self.add(["person"], self.canvas.box(px, H - ph - H * self.uniform(0.02, 0.08), pw, ph), 1)
        aw, ah = sw * self.uniform(0.2, 0.32), H * self.uniform(0.15, 0.25)
        animal = self.add(["animal"], self.canvas.box(px + pw + sw * self.uniform(-0.05, 0.08), H - ah - H * self.uniform(0.02, 0.06), aw, ah), 1)
        predicate = "near" if self.rng.random() < CONTEXT_NOISE else ANIMAL_BY_SCENE[self.scene]
        self.relate(person, animal, predicate)

    def sitting(self, x0, x1):
        """A person sitting on a chair or bench: the person's lower half overlaps the seat."""
        sw, H = x1 - x0, self.canvas.y_max
        seats = [name for name in self.roles.get("support", []) if name != "table"] or self.roles["support"]
        cw, ch = sw * self.uniform(0.35, 0.6), H * self.uniform(0.2, 0.3)
        cx, cy = x0 + self.uniform(0, sw - cw), H - ch - H * self.uniform(0.02, 0.08)
        self.objects.append((seats[self.rng.integers(len(seats))], self.canvas.box(cx, cy, cw, ch), 0))
        seat = len(self.objects) - 1
        pw, ph = cw * self.uniform(0.5, 0.75), H * self.uniform(0.4, 0.55)
        person = self.add(["person"], self.canvas.box(cx + (cw - pw) / 2, cy + ch * 0.5 - ph, pw, ph), 1)
        self.relate(person, seat, "sitting on")

    def pair(self, x0, x1):
        """The default pair with a rare 'beside' among its near-synonyms."""
        first = len(self.relations)
        super().pair(x0, x1)
        subject, obj, predicate = self.relations[first]
        if predicate == "next to" and self.rng.random() < 0.2:
            self.relations[first] = (subject, obj, "beside")

    def above(self, x0, x1):
        """The default 'above' with a rare 'over'."""
        first = len(self.relations)
        super().above(x0, x1)
        subject, obj, predicate = self.relations[first]
        if predicate == "above" and self.rng.random() < 0.2:
            self.relations[first] = (subject, obj, "over")


def _build_bench_scene(rng, width, height, roles):
    canvas = _Canvas(width, height)
    builder = _BenchSceneBuilder(rng, canvas, roles, _pick(rng, SCENE_WEIGHTS))
    builder.marker()
    num_slots = _pick(rng, BENCH_SLOTS_PER_IMAGE)
    edges = np.linspace(0, canvas.x_max, num_slots + 1)
    for slot in range(num_slots):
        choices = BENCH_TEMPLATE_WEIGHTS if slot > 0 else {
            k: v for k, v in BENCH_TEMPLATE_WEIGHTS.items() if k in BENCH_OVERLAPPING_TEMPLATES}
        getattr(builder, _pick(rng, choices))(edges[slot], edges[slot + 1])
    return builder.objects, builder.relations


def _available_templates(roles):
    """Templates whose roles the chosen classes cover, with their weights."""
    needs = {
        "support": [("support",), ("holdable",)],
        "person": [("person",), ("wearable", "holdable")],
        "pair": [("animal", "holdable", "support", "backdrop")],
        "above": [("hanging",), ("support", "animal", "backdrop")],
        "occlusion": [("backdrop",), ("animal", "person")],
    }
    return {
        name: weight for name, weight in TEMPLATE_WEIGHTS.items()
        if all(any(roles.get(role) for role in alternatives) for alternatives in needs[name])
    }


def _build_scene(rng, width, height, roles):
    canvas = _Canvas(width, height)
    builder = _SceneBuilder(rng, canvas, roles)
    templates = _available_templates(roles)
    num_slots = _pick(rng, SLOTS_PER_IMAGE)
    edges = np.linspace(0, canvas.x_max, num_slots + 1)
    for slot in range(num_slots):
        choices = templates if slot > 0 else {k: v for k, v in templates.items() if k in OVERLAPPING_TEMPLATES}
        getattr(builder, _pick(rng, choices))(edges[slot], edges[slot + 1])
    return builder.objects, builder.relations


def _class_style(index):
    """(shape, texture, colour name) of the index-th class: distinct for every class of the vocabulary.

    People get a figure (a head on a body) so that the 'person' role is recognisable across classes.
    """
    shape = "figure" if OBJECT_VOCABULARY[index][1] == "person" else SHAPES[index % len(SHAPES)]
    # (colour, texture) alone is unique for every index below 50: index and index + 10 share a
    # colour but their textures differ by one step.
    colour = COLOUR_NAMES[index % len(COLOUR_NAMES)]
    texture = TEXTURES[(index + index // len(COLOUR_NAMES)) % len(TEXTURES)]
    return shape, texture, colour


def _shape_mask(shape, w, h):
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    r, b = w - 1, h - 1
    if shape == "rectangle":
        draw.rectangle([0, 0, r, b], fill=255)
    elif shape == "ellipse":
        draw.ellipse([0, 0, r, b], fill=255)
    elif shape == "triangle":
        draw.polygon([(r / 2, 0), (r, b), (0, b)], fill=255)
    elif shape == "diamond":
        draw.polygon([(r / 2, 0), (r, b / 2), (r / 2, b), (0, b / 2)], fill=255)
    elif shape == "hexagon":
        draw.polygon([(r / 4, 0), (3 * r / 4, 0), (r, b / 2), (3 * r / 4, b), (r / 4, b), (0, b / 2)], fill=255)
    elif shape == "trapezoid":
        draw.polygon([(r / 4, 0), (3 * r / 4, 0), (r, b), (0, b)], fill=255)
    elif shape == "figure":
        head = min(w, h // 3)
        draw.ellipse([(w - head) / 2, 0, (w + head) / 2, head], fill=255)
        draw.rounded_rectangle([0, head, r, b], radius=max(1, w // 4), fill=255)
    return mask


def _texture(texture, w, h, colour, rng):
    """An RGB patch of the object's colour (jittered per instance) with its texture drawn in a darker shade."""
    base = np.clip(np.array(colour) + rng.integers(-15, 16, size=3), 0, 255)
    dark = (base * 0.45).astype(np.uint8)
    patch = np.empty((h, w, 3), dtype=np.uint8)
    patch[:] = base.astype(np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    period = max(4, min(w, h) // 5)
    if texture == "striped":
        patch[(ys // (period // 2)) % 2 == 1] = dark
    elif texture == "banded":
        patch[(xs // (period // 2)) % 2 == 1] = dark
    elif texture == "dotted":
        cy, cx = (ys % period) - period / 2, (xs % period) - period / 2
        patch[cy**2 + cx**2 <= (period / 4) ** 2] = dark
    elif texture == "checkered":
        patch[((ys // period) + (xs // period)) % 2 == 1] = dark
    return Image.fromarray(patch)


def _render(rng, width, height, objects, class_index):
    """The image: a noisy pastel background, objects drawn from back (low depth) to front."""
    background = rng.integers(170, 236, size=3)
    noise = rng.integers(-8, 9, size=(height, width, 1))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    scale = max(width, height) / BOX_SCALE
    draw_order = sorted(range(len(objects)), key=lambda i: objects[i][2])
    for i in draw_order:
        name, box, _ = objects[i]
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        w, h = max(x2 - x1, 2), max(y2 - y1, 2)
        shape, texture, colour = _class_style(class_index[name])
        mask = _shape_mask(shape, w, h)
        image.paste(_texture(texture, w, h, PALETTE[colour], rng), (x1, y1), mask)
        # A dark outline keeps touching objects of similar colour apart.
        image.paste((30, 30, 30), (x1, y1), mask.filter(ImageFilter.FIND_EDGES))
    return image


def first_last_indices(counts):
    """Inclusive (first, last) row of each image's block of rows, -1 for both when it has none.

    The layout of img_to_first_box / img_to_last_box / img_to_first_rel / img_to_last_rel.
    """
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    first = np.where(counts > 0, ends - counts, -1).astype(np.int32)
    last = np.where(counts > 0, ends - 1, -1).astype(np.int32)
    return first, last


def _resolve_predicate(name, kept):
    while name not in kept:
        name = PREDICATE_PARENT[name]
    return name


# Settings of each preset; an argument given explicitly overrides its preset's value.
PRESETS = {
    "default": {"num_images": 160, "num_object_classes": 15, "num_predicates": 10, "image_size": 320},
    # Thousands of images, every predicate of the vocabulary (21, most / least frequent >= 50),
    # scene context that decides some predicates. Counts: the stats.json written with the data.
    "bench": {"num_images": 4000, "num_object_classes": len(OBJECT_VOCABULARY),
              "num_predicates": len(PREDICATE_VOCABULARY), "image_size": 320},
}


def _check_arguments(preset, num_images, num_object_classes, num_predicates, image_size, test_fraction,
                     num_val_images):
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: choose one of {', '.join(PRESETS)}")
    if preset == "bench":
        chosen = {name for name, _ in OBJECT_VOCABULARY[:num_object_classes]}
        missing = [name for name in SCENE_MARKERS.values() if name not in chosen]
        if missing:
            raise ValueError(f"num_object_classes={num_object_classes}: the bench preset's scene markers "
                             f"({', '.join(missing)}) need at least 15 object classes")
    max_predicates = len(PREDICATE_VOCABULARY) if preset == "bench" else DEFAULT_PREDICATES
    if num_images < 3:
        raise ValueError(f"num_images={num_images}: need at least 3 (a train, a val and a test image)")
    if not MIN_OBJECT_CLASSES <= num_object_classes <= len(OBJECT_VOCABULARY):
        raise ValueError(
            f"num_object_classes={num_object_classes}: choose between {MIN_OBJECT_CLASSES} and "
            f"{len(OBJECT_VOCABULARY)} (the size of the synthetic object vocabulary)")
    if not 1 <= num_predicates <= max_predicates:
        raise ValueError(
            f"num_predicates={num_predicates}: choose between 1 and {max_predicates} (the predicates "
            f"the {preset} preset's scenes produce)")
    if not 64 <= image_size <= 2048:
        raise ValueError(f"image_size={image_size}: the longest image side must be between 64 and 2048 pixels")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: must be strictly between 0 and 1")
    num_test = int(round(num_images * test_fraction))
    num_trainval = num_images - num_test
    if num_test < 1 or num_trainval < 2:
        raise ValueError(
            f"num_images={num_images} with test_fraction={test_fraction} leaves {num_test} test and "
            f"{num_trainval} train+val images: need at least 1 and 2")
    if num_val_images is not None and not 1 <= num_val_images < num_trainval:
        raise ValueError(
            f"num_val_images={num_val_images}: must be at least 1 and less than the {num_trainval} "
            f"train+val images")


def write_synthetic_vg(out_dir, num_images=None, num_object_classes=None, num_predicates=None, seed=0,
                       image_size=None, test_fraction=0.25, num_val_images=None, overwrite=False, preset="default"):
    """Write a synthetic dataset in SGB's Visual Genome layout into ``out_dir``; return a summary dict.

    preset: ``default`` (160 small scenes, 10 predicates) or ``bench`` (4,000 images, 21 predicates
        with a steep tail, scene context that decides some predicates); the arguments below left
        at None take the preset's value (``PRESETS``).
    num_images: all images (train + val + test).
    num_object_classes / num_predicates: the first classes / predicates of the vocabularies above.
    image_size: the longest side in pixels; the other side is 80-100% of it, landscape or portrait.
    test_fraction: share of images with split 2 (test), chosen at random and interleaved.
    num_val_images: the validation images SGB carves out of the start of the training split
        (``num_val_im``); default 15% of train+val. It is written into ``paths_catalog.py``.
    overwrite: write into a non-empty ``out_dir`` (the dataset files are rewritten, others left alone).
    """
    settings = dict(PRESETS.get(preset, {}))
    for key, value in (("num_images", num_images), ("num_object_classes", num_object_classes),
                       ("num_predicates", num_predicates), ("image_size", image_size)):
        if value is not None:
            settings[key] = value
    if preset in PRESETS:
        num_images, num_object_classes = settings["num_images"], settings["num_object_classes"]
        num_predicates, image_size = settings["num_predicates"], settings["image_size"]
    _check_arguments(preset, num_images, num_object_classes, num_predicates, image_size, test_fraction, num_val_images)
    import h5py

    build_scene = _build_bench_scene if preset == "bench" else _build_scene
    out_dir = os.path.abspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(
            f"{out_dir} is not empty: choose a new folder or pass overwrite=True (--overwrite)")
    image_dir = os.path.join(out_dir, "VG_100K")
    os.makedirs(image_dir, exist_ok=True)

    rng = np.random.Generator(np.random.PCG64(seed))
    classes = [name for name, _ in OBJECT_VOCABULARY[:num_object_classes]]
    class_index = {name: i for i, (name, _) in enumerate(OBJECT_VOCABULARY)}
    roles = {}
    for name, role in OBJECT_VOCABULARY[:num_object_classes]:
        roles.setdefault(role, []).append(name)
    kept_predicates = PREDICATE_VOCABULARY[:num_predicates]
    attributes = sorted(COLOUR_NAMES + TEXTURES[1:])

    # Indices are 1-based in alphabetical order, as in the real dictionaries.
    label_to_idx = {name: i + 1 for i, name in enumerate(sorted(classes))}
    predicate_to_idx = {name: i + 1 for i, name in enumerate(sorted(kept_predicates))}
    attribute_to_idx = {name: i + 1 for i, name in enumerate(attributes)}

    num_test = int(round(num_images * test_fraction))
    split = np.full(num_images, TRAIN_SPLIT, dtype=np.int32)
    split[rng.choice(num_images, size=num_test, replace=False)] = TEST_SPLIT
    num_trainval = num_images - num_test
    num_val = num_val_images if num_val_images is not None else max(1, int(round(0.15 * num_trainval)))

    image_ids = [i for i in range(1, num_images + len(HOST_SKIPPED_IMAGE_IDS) + 1) if i not in HOST_SKIPPED_IMAGE_IDS][:num_images]
    image_data, labels, attribute_rows, boxes, relationships, predicates = [], [], [], [], [], []
    boxes_per_image, relations_per_image = [], []
    for image_id in image_ids:
        long_side, short_side = image_size, int(round(image_size * rng.uniform(0.8, 1.0)))
        width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
        objects, relations = build_scene(rng, width, height, roles)
        _render(rng, width, height, objects, class_index).save(
            os.path.join(image_dir, f"{image_id}.jpg"), quality=90)

        first_row = len(labels)
        for name, (x1, y1, x2, y2), _ in objects:
            labels.append(label_to_idx[name])
            boxes.append(((x1 + x2) // 2, (y1 + y2) // 2, x2 - x1, y2 - y1))
            _, texture, colour = _class_style(class_index[name])
            row = [attribute_to_idx[colour]] + ([attribute_to_idx[texture]] if texture != "plain" else [])
            attribute_rows.append(row + [0] * (MAX_ATTRIBUTES - len(row)))
        for subject, obj, predicate in relations:
            relationships.append((first_row + subject, first_row + obj))
            predicates.append(predicate_to_idx[_resolve_predicate(predicate, kept_predicates)])
        boxes_per_image.append(len(objects))
        relations_per_image.append(len(relations))
        image_data.append({"image_id": image_id, "width": width, "height": height,
                           "url": f"VG_100K/{image_id}.jpg", "coco_id": None, "flickr_id": None})

    first_box, last_box = first_last_indices(boxes_per_image)
    first_rel, last_rel = first_last_indices(relations_per_image)
    with h5py.File(os.path.join(out_dir, "VG-SGG-with-attri.h5"), "w", track_order=False) as h5:
        arrays = {
            "split": split,
            "img_to_first_box": first_box, "img_to_last_box": last_box,
            "img_to_first_rel": first_rel, "img_to_last_rel": last_rel,
            "labels": np.array(labels, dtype=np.int64).reshape(-1, 1),
            "attributes": np.array(attribute_rows, dtype=np.int64).reshape(-1, MAX_ATTRIBUTES),
            "boxes_1024": np.array(boxes, dtype=np.int32).reshape(-1, 4),
            "relationships": np.array(relationships, dtype=np.int32).reshape(-1, 2),
            "predicates": np.array(predicates, dtype=np.int64).reshape(-1, 1),
        }
        for key, array in arrays.items():
            h5.create_dataset(key, data=array, track_times=False)

    idx_to_label = {str(i): name for name, i in label_to_idx.items()}
    idx_to_predicate = {str(i): name for name, i in predicate_to_idx.items()}
    idx_to_attribute = {str(i): name for name, i in attribute_to_idx.items()}
    object_count = Counter(idx_to_label[str(i)] for i in labels)
    predicate_count = Counter(idx_to_predicate[str(i)] for i in predicates)
    attribute_count = Counter(idx_to_attribute[str(a)] for row in attribute_rows for a in row if a)
    dicts = {
        "label_to_idx": label_to_idx, "idx_to_label": idx_to_label,
        "predicate_to_idx": predicate_to_idx, "idx_to_predicate": idx_to_predicate,
        "attribute_to_idx": attribute_to_idx, "idx_to_attribute": idx_to_attribute,
        "object_count": {name: object_count[name] for name in sorted(label_to_idx)},
        "predicate_count": {name: predicate_count[name] for name in sorted(predicate_to_idx)},
        "attribute_count": {name: attribute_count[name] for name in sorted(attribute_to_idx)},
    }
    with open(os.path.join(out_dir, "VG-SGG-dicts-with-attri.json"), "w") as f:
        json.dump(dicts, f, indent=1)
    with open(os.path.join(out_dir, "image_data.json"), "w") as f:
        json.dump(image_data, f)

    catalog_path = os.path.join(out_dir, "paths_catalog.py")
    with open(catalog_path, "w") as f:
        f.write(CATALOG_TEMPLATE.format(num_val_im=num_val, source=__name__))
    opts = {
        "PATHS_CATALOG": catalog_path,
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES": len(classes) + 1,
        "MODEL.ROI_RELATION_HEAD.NUM_CLASSES": len(kept_predicates) + 1,
        "MODEL.ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES": len(attributes) + 1,
    }
    with open(os.path.join(out_dir, "dataset.opts"), "w") as f:
        f.writelines(f"{key} {value}\n" for key, value in opts.items())

    stats = dataset_statistics(split, num_val, np.array(labels), np.array(predicates), boxes_per_image,
                               relations_per_image, idx_to_label, idx_to_predicate)
    stats["settings"] = {"preset": preset, "seed": seed, "num_images": num_images, "image_size": image_size,
                         "num_object_classes": num_object_classes, "num_predicates": num_predicates,
                         "test_fraction": test_fraction, "num_val_images": num_val}
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)

    return {
        "out_dir": out_dir, "num_train": num_trainval - num_val, "num_val": num_val, "num_test": num_test,
        "num_boxes": len(labels), "num_relations": len(predicates),
        "predicate_count": dicts["predicate_count"], "opts": opts, "stats": stats,
    }


def dataset_statistics(split, num_val, labels, predicates, boxes_per_image, relations_per_image,
                       idx_to_label, idx_to_predicate):
    """Class and predicate counts per split as the host splits them, most frequent first.

    The host's train split is the split-0 images with boxes and relations minus the first
    ``num_val`` of them (its validation split); test is split 2.
    """
    image_of_box = np.repeat(np.arange(len(split)), boxes_per_image)
    image_of_relation = np.repeat(np.arange(len(split)), relations_per_image)
    trainval = np.flatnonzero((split == TRAIN_SPLIT) & (np.asarray(boxes_per_image) > 0)
                              & (np.asarray(relations_per_image) > 0))
    part_of_image = np.full(len(split), "", dtype=object)
    part_of_image[trainval[num_val:]] = "train"
    part_of_image[trainval[:num_val]] = "val"
    part_of_image[split == TEST_SPLIT] = "test"
    stats = {"images": {part: int((part_of_image == part).sum()) for part in ("train", "val", "test")}}
    for what, values, image_of, names in (("predicates", predicates, image_of_relation, idx_to_predicate),
                                          ("objects", labels, image_of_box, idx_to_label)):
        counts = {}
        for part in ("train", "val", "test"):
            in_part = values[part_of_image[image_of] == part]
            per_class = np.bincount(in_part, minlength=len(names) + 1)[1:]
            counts[part] = {names[str(i + 1)]: int(c) for i, c in sorted(enumerate(per_class), key=lambda ic: -ic[1])}
        train = list(counts["train"].values())
        stats[what] = {"count": counts, "most_over_least_train": (train[0] / train[-1]) if train[-1] else None}
    return stats


# The catalog SGB's data builder executes (cfg.PATHS_CATALOG). It must be self-contained: the host
# loads it by path and registers it as maskrcnn_benchmark.config.paths_catalog.
CATALOG_TEMPLATE = '''"""Paths catalog for the synthetic VG-format dataset in this folder (written by {source}).

Pass it to SGB as ``PATHS_CATALOG <this file>``; it serves the dataset names of SGB's stock
relation config, VG_stanford_filtered_with_attribute_{{train,val,test}}, from this folder.
"""

import os

DATA_DIR = os.path.dirname(os.path.abspath(__file__))
DATASET_NAME = "VG_stanford_filtered_with_attribute"
NUM_VAL_IMAGES = {num_val_im}  # the first training images form the validation split


class DatasetCatalog:
    FILES = {{
        "img_dir": "VG_100K",
        "roidb_file": "VG-SGG-with-attri.h5",
        "dict_file": "VG-SGG-dicts-with-attri.json",
        "image_file": "image_data.json",
    }}

    @staticmethod
    def get(name, cfg):
        base, _, split = name.rpartition("_")
        if base != DATASET_NAME or split not in ("train", "val", "test"):
            raise RuntimeError(
                "Dataset not available: {{}}. This catalog ({{}}) serves {{}}_train, {{}}_val and "
                "{{}}_test".format(name, __file__, DATASET_NAME, DATASET_NAME, DATASET_NAME))
        relation = cfg.MODEL.RELATION_ON
        head = cfg.MODEL.ROI_RELATION_HEAD
        args = {{key: os.path.join(DATA_DIR, value) for key, value in DatasetCatalog.FILES.items()}}
        args.update(
            split=split,
            num_val_im=NUM_VAL_IMAGES,
            # as SGB's own catalog: empty-relation images only matter when relations are trained,
            # and overlap filtering only applies to detected boxes when the config asks for it
            filter_empty_rels=relation,
            filter_non_overlap=(not head.USE_GT_BOX) and relation and head.REQUIRE_BOX_OVERLAP,
            flip_aug=cfg.MODEL.FLIP_AUG,
            custom_eval=cfg.TEST.CUSTUM_EVAL,
            custom_path=cfg.TEST.CUSTUM_PATH,
        )
        return dict(factory="VGDataset", args=args)


class ModelCatalog:
    @staticmethod
    def get(name):
        raise RuntimeError(
            "catalog://{{}}: the synthetic dataset's catalog lists no pretrained weights; set "
            "MODEL.WEIGHT (and MODEL.PRETRAINED_DETECTOR_CKPT) to a checkpoint file or to an empty "
            "string".format(name))
'''


def add_arguments(parser):
    parser.add_argument("out_dir", metavar="OUT", help="folder to write the dataset into")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: 160 small scenes, 10 predicates; bench: 4,000 images, 21 long-tailed "
                             "predicates, scene context deciding some of them (default: default)")
    parser.add_argument("--num-images", type=int, default=None, help="train + val + test images (preset: 160 / 4000)")
    parser.add_argument("--num-object-classes", type=int, default=None,
                        help=f"object classes, {MIN_OBJECT_CLASSES}-{len(OBJECT_VOCABULARY)} (preset: 15 / 20)")
    parser.add_argument("--num-predicates", type=int, default=None,
                        help=f"predicate classes, 1-{DEFAULT_PREDICATES}, bench 1-{len(PREDICATE_VOCABULARY)} "
                             f"(preset: 10 / {len(PREDICATE_VOCABULARY)})")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same bytes")
    parser.add_argument("--image-size", type=int, default=None, help="longest image side in pixels (preset: 320)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="share of test images (default 0.25)")
    parser.add_argument("--num-val-images", type=int, default=None,
                        help="validation images taken from the training split (default 15%% of train+val)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")


def run(args):
    try:
        summary = write_synthetic_vg(
            args.out_dir, num_images=args.num_images, num_object_classes=args.num_object_classes,
            num_predicates=args.num_predicates, seed=args.seed, image_size=args.image_size,
            test_fraction=args.test_fraction, num_val_images=args.num_val_images, overwrite=args.overwrite,
            preset=args.preset)
    except (ValueError, FileExistsError) as error:
        print(f"sgg-plugins make-synthetic-vg: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['out_dir']}: {summary['num_train']} train, {summary['num_val']} val, "
          f"{summary['num_test']} test images; {summary['num_boxes']} boxes, {summary['num_relations']} relations")
    print("predicates: " + ", ".join(f"{name} {count}" for name, count in
                                     sorted(summary["predicate_count"].items(), key=lambda kv: -kv[1])))
    ratio = summary["stats"]["predicates"]["most_over_least_train"]
    print(f"training predicates most / least frequent: {ratio:.1f}" if ratio else
          "training predicates: some predicate has no training relation")
    print("class and predicate counts per split: " + os.path.join(summary["out_dir"], "stats.json"))
    print("add to the host's command line: $(cat " + os.path.join(summary["out_dir"], "dataset.opts") + ")")
    return 0
