"""MODEL.MRC on SGB predictors: masked relation classification (seed 004).

"Encode a triplet's Subject and Object independently (by masking their visual contexts); pool
their final representations; concat pooled representations and map them to V outputs (relation
labels) with an MLP." Each object is encoded by the host's own object context with every other
object hidden: the context is called once more, on the clean call's own arguments, with the batch's
images replaced by one-object images (``regularizers.mrc.one_object_images``). Every context of SGB
encodes images independently, so each object sees only itself; its own input (ROI feature, label
embedding, box embedding) is untouched. Per context (``ALONE``):

- Motifs (``LSTMContext``): the object and edge LSTMs run over sequences of length one; the
  representation is the edge context (what ``post_emb`` reads).
- VCTree (``VCTreeLSTMContext``): every forest is a single node (the host's own ``generate_forest``
  on one-object images, not the clean forest the other extra passes replay); the representation is
  the edge tree-LSTM's output.
- Transformer (``TransformerContext``): every image has one object, so each object's self-attention
  (object and edge encoders) is restricted to itself; the representation is the edge context.
- IMP (``IMPContext``): one-object images have no pairs, so no message reaches a node: its state is
  the host's GRU updated ``num_iter`` times with an empty neighbourhood; the representation is the
  final node state.
- Causal (``CausalAnalysisPredictor``) builds one of the contexts above (LSTM or tree): the same
  rows apply; its VTransE context has no object context to mask.

What is reused from the clean pass: the context call's arguments (the ROI features, detached, and
the box lists; the one-object images keep their image sizes, so each object's own box encoding,
``encode_box_info``, is the clean pass's). The pass runs in ``step.extra_pass()`` (no dropout, every
buffer restored afterwards) and inside ``regularizers.align.running_statistics``.

Normalisation: "independently" holds exactly. A BatchNorm in training mode normalises each sample
with the mean and variance of the whole batch, so another object's box would reach an object's
representation through it (Motifs' and VCTree's ``pos_embed``, VCTree's tree scorer). In the
one-object pass every layer of the context that normalises with batch statistics (every
``_BatchNorm``: BatchNorm1d/2d/3d, SyncBatchNorm; found by type, not by name) runs in eval mode on
its running statistics as they were *before this step's clean pass* (a ``buffers`` tap records them
when the clean pass reaches the layer: the clean pass has already updated them with the batch, with
the other objects in it). They are read, not updated; the weight and bias of a layer on the
representation's path (``pos_embed``) still get MRC's gradient; each layer's ``training`` flag is
restored on exit, the rest of the context stays in training mode. LayerNorm (Transformer) normalises
each object on its own and is left alone. A context norm without running statistics
(``track_running_stats=False``) is refused at construction. Cost of exactness: the running
statistics move slowly (SGB's momentum is 0.001), so early in training the one-object pass
normalises box embeddings with statistics that still differ from the batch's that the clean pass
uses.

Gradient: the ROI features are detached, so MRC trains exactly the object context's modules that
the pass uses and the MLP (docs/methods.md, MRC: "The gradient trains the context encoder and the MLP"),
nothing of the relation head, the prior or the feature extractors.
"""

import contextlib
import sys
from dataclasses import dataclass
from typing import Optional

import torch

from ....config import ConfigError
from ....regularizers.align import batch_statistics_norms, running_statistics
from ....regularizers.mrc import MaskedRelationClassifier
from ...hooks import Tap, capture, map_floating, patched_attribute, resolve
from .base import SGBObjective


@dataclass(frozen=True)
class AloneContext:
    """How to call one object context on one-object images.

    ``pairs_arg`` / ``union_arg``: positional arguments holding the per-image relation pairs and
    their union features, which one-object images do not have (replaced by none); ``representation``
    taps the per-object output (relative to the predictor); ``forest_builder`` the module-level
    function that builds the context's forests from the images given.
    """

    representation: Tap = Tap("context_layer", index=2)
    pairs_arg: Optional[int] = None
    union_arg: Optional[int] = None
    forest_builder: Optional[str] = None


# Positional layout of each context's forward, read from the host: LSTMContext.forward(x, proposals,
# rel_pair_idxs, logger, ...) and VCTreeLSTMContext's (neither reads rel_pair_idxs; the Motifs
# predictor passes its logger there), TransformerContext.forward(roi_features, proposals, logger),
# IMPContext.forward(x, proposals, union_features, rel_pair_idxs, logger).
ALONE = {
    "LSTMContext": AloneContext(),
    "VCTreeLSTMContext": AloneContext(forest_builder="generate_forest"),
    "TransformerContext": AloneContext(),
    "IMPContext": AloneContext(representation=Tap("context_layer.node_gru", call="last"), union_arg=2, pairs_arg=3),
}
PROPOSALS_ARG = 1  # every context's second argument
STATS_TAP = "mrc_running_stats:"  # + a norm's path in the context: its buffers before the clean pass


class MrcObjective(SGBObjective):
    node = "MRC"

    def __init__(self, predictor, config):
        super().__init__()
        self.cfg = cfg = config.MODEL.MRC
        context = getattr(predictor, "context_layer", None)
        name = type(context).__name__
        if name not in ALONE:
            raise ConfigError(f"MODEL.MRC: no object context to mask is known for {name} (the predictor's "
                              f"context_layer); known: {', '.join(ALONE)}. Disable MODEL.MRC for this predictor.")
        self.alone = ALONE[name]
        untracked = [n for n, m in batch_statistics_norms(context) if m.running_mean is None]
        if untracked:
            raise ConfigError(f"MODEL.MRC: {name}'s {', '.join(untracked)} normalise with batch statistics even "
                              f"in eval mode (track_running_stats=False): the one-object pass could not encode "
                              f"each object independently. Disable MODEL.MRC for this predictor.")
        # The real forest builder, kept now: inside an extra pass the adapter replays the clean forests.
        self._build_forest = (getattr(sys.modules[type(context).__module__], self.alone.forest_builder)
                              if self.alone.forest_builder else None)
        path, _, attribute = predictor.spec.object_dim.rpartition(".")
        self.classifier = MaskedRelationClassifier(getattr(resolve(predictor, path), attribute),
                                                   config.MODEL.ROI_RELATION_HEAD.NUM_CLASSES, cfg.HIDDEN_DIM)

    def taps(self, predictor):
        taps = {"mrc_context_call": Tap("context_layer", "call")}
        # Each batch-statistics norm's running statistics before the clean pass updates them with the batch.
        for path, _ in batch_statistics_norms(predictor.context_layer):
            taps[STATS_TAP + path] = Tap(f"context_layer.{path}", "buffers")
        return taps

    def losses(self, step):
        objects = self.encode_alone(step)
        subj, obj = step.pair_rows
        loss = self.classifier.loss(objects, subj, obj, step.rel_labels_cat)
        return {"loss_mrc": self.cfg.WEIGHT * loss}

    def encode_alone(self, step):
        """[num_objects, D]: every object of the batch encoded by the host's context on its own."""
        predictor = step.predictor
        args, kwargs = step.clean["mrc_context_call"]
        args = list(map_floating(torch.Tensor.detach, tuple(args)))
        alone = step.one_object_images(args[PROPOSALS_ARG])
        args[PROPOSALS_ARG] = alone
        if self.alone.union_arg is not None:
            args[self.alone.union_arg] = args[self.alone.union_arg][:0]
        if self.alone.pairs_arg is not None:
            no_pairs = torch.zeros((0, 2), dtype=torch.long, device=args[0].device)
            args[self.alone.pairs_arg] = [no_pairs] * len(alone)
        tap = {"mrc": self.alone.representation}
        # A norm the clean pass did not call still holds the statistics it had before the step.
        before = {key[len(STATS_TAP):]: value for key, value in step.clean.items() if key.startswith(STATS_TAP)}
        with step.extra_pass(), running_statistics(predictor.context_layer, before), self._own_forests(predictor), \
                capture(predictor, tap) as found:
            predictor.context_layer(*args, **kwargs)
        return found["mrc"]

    def _own_forests(self, predictor):
        """The one-object images get their own (single-node) forests from the host's builder."""
        if self._build_forest is None:
            return contextlib.nullcontext()
        module = sys.modules[type(predictor.context_layer).__module__]
        return patched_attribute(module, self.alone.forest_builder, self._build_forest)
