"""``sgg-plugins embed-candidates``'s command line, without importing torch or OpenCLIP.

Writes MODEL.CLIPMATCH's candidate text file (:mod:`sgg_plugins.text.candidates`) for a dataset in
SGB's Visual Genome layout, e.g. on a machine that can fetch the CLIP weights, for a training
machine that cannot.
"""

from ..config import CLIPMATCH_DEFAULTS


def add_arguments(parser):
    parser.add_argument("--dict-file", required=True, help="SGB's VG-SGG-dicts.json (idx_to_label, idx_to_predicate)")
    parser.add_argument("--roidb-file", required=True,
                        help="SGB's VG-SGG.h5: every (subject, object) class pair of its training relations gets "
                             "its p prompts")
    clip = parser.add_argument_group("CLIP and texts (must match MODEL.CLIPMATCH's keys of the training run)")
    clip.add_argument("--clip-model", default=CLIPMATCH_DEFAULTS["CLIP_MODEL"],
                      help="OpenCLIP model name, or local-dir:/path to a saved OpenCLIP model folder "
                           "(MODEL.CLIPMATCH.CLIP_MODEL; default %(default)s)")
    clip.add_argument("--clip-pretrained", default=CLIPMATCH_DEFAULTS["CLIP_PRETRAINED"],
                      help="OpenCLIP weights tag or local checkpoint file (MODEL.CLIPMATCH.CLIP_PRETRAINED; "
                           "default %(default)s)")
    clip.add_argument("--prompt", default=CLIPMATCH_DEFAULTS["PROMPT"],
                      help="prompt with {subject}, {predicate}, {object} (MODEL.CLIPMATCH.PROMPT; default '%(default)s')")
    clip.add_argument("--null-prompt", default=CLIPMATCH_DEFAULTS["NULL_PROMPT"],
                      help="the text of pairs without a relation (MODEL.CLIPMATCH.NULL_PROMPT; default '%(default)s')")
    parser.add_argument("--out", required=True, help="file to write (use it as MODEL.CLIPMATCH.TEXT_EMBEDDINGS)")
    parser.add_argument("--device", default=None,
                        help="where CLIP's text encoder runs, e.g. cpu or cuda:0 (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="texts encoded per forward pass (default %(default)s); lower it if memory runs out")


def run(args):
    from .candidates import run as embed_candidates

    return embed_candidates(args)
