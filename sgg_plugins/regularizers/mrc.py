"""Masked relation classification (seed 004, ``MODEL.MRC``): host-free core.

Seed 004's pretraining objective: "1. Encode a triplet's Subject and Object independently (by
masking their visual contexts) 2. Pool their final cross-modal representations ([CLS] token)
3. Concat pooled representations and map them to V outputs (relation labels) with an MLP".

In a scene-graph model the encoder that gives an object its visual context is the host's object
context (an LSTM over the image's objects, a tree-LSTM, a Transformer encoder, message passing).
Masking an object's context means the context sees that object and nothing else:
:func:`one_object_images` turns a batch of images into a batch of one-object images, so the host's
own context code, which never mixes images, encodes every object alone, with all its own input
(features, label embedding, box) intact. The object's final context state is its pooled
representation (SGB keeps one vector per object, as the [CLS] token is one vector per input).
:class:`MaskedRelationClassifier` concatenates the subject's and the object's and maps them to the
predicate labels with an MLP, trained with the relation cross-entropy on the sampled pairs.

Choices the paper leaves open, made here: the MLP has one hidden layer with ReLU (``hidden_dim``,
default 512); the relation labels include SGB's background label 0, as the host's relation loss
does, so background pairs teach the classifier that two objects seen alone are unrelated.
"""

import torch
import torch.nn.functional as F
from torch import nn


def one_object_images(proposals):
    """Every object of every image as an image of its own, in the same order.

    ``proposals`` are per-image box lists that support ``len`` and slicing (SGB's BoxList slices
    its boxes and every field, keeping the image size). Returns one single-box list per object.
    """
    return [boxes[i:i + 1] for boxes in proposals for i in range(len(boxes))]


class MaskedRelationClassifier(nn.Module):
    """MLP over [subject representation, object representation] -> relation logits.

    Args:
        object_dim: width of one object's representation.
        num_relations: number of relation labels (SGB: predicates + background).
        hidden_dim: the MLP's hidden width.
    """

    def __init__(self, object_dim, num_relations, hidden_dim=512):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * object_dim, hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, num_relations))

    def forward(self, subject, obj):
        return self.mlp(torch.cat([subject, obj], -1))

    def loss(self, objects, subj_rows, obj_rows, rel_labels):
        """Cross-entropy of the pairs' relation labels from their objects' masked-context representations.

        Args:
            objects: [num_objects, object_dim], each object encoded alone.
            subj_rows, obj_rows: [N] rows of each pair's subject and object in ``objects``.
            rel_labels: [N] relation labels (0 = background).

        With no pair, a zero connected to the classifier and ``objects``.
        """
        logits = self(objects[subj_rows], objects[obj_rows])
        if logits.shape[0] == 0:
            return logits.sum() * 0.0 + objects.sum() * 0.0
        return F.cross_entropy(logits, rel_labels.long())
