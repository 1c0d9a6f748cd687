"""Face-pair datasets: readers that turn a benchmark's pair list into (image A, image B, same) pairs.

Every reader returns ``list[Pair]``; :func:`read_dataset` wraps them behind one spec string and
returns a :class:`Dataset` (name, pairs, whether the images are ArcFace-aligned 112x112 crops).
An image of a pair is an :data:`ImageRef`: a :class:`~pathlib.Path`, or an in-memory
:class:`ImageSource` (an :class:`EncodedImage` from an insightface ``.bin``, an :class:`ArrayImage`,
or an occluded variant from :mod:`explainer_service.occlusion`). Consumers load any of them with
:func:`load_pair_image`, which returns ``(H, W, 3)`` ``uint8`` RGB like
:func:`~explainer_service.images.load_image`.

Formats (``read_dataset`` spec in brackets; ``-aligned`` reads the ``aligned112`` mirror):

- LFW View 2 [``lfw:``, ``lfw-aligned:``]: ``pairs.txt`` over ``images/`` or ``aligned112/``.
- CFP [``cfp-ff:``, ``cfp-fp:``]: ``Protocol/Pair_list_{F,P}.txt`` and
  ``Protocol/Split/{FF,FP}/NN/{same,diff}.txt``; fold = split number - 1.
- CPLFW / CALFW [``cplfw:``, ``calfw:``]: ``pairs_CPLFW.txt`` / ``pairs_CALFW.txt``, two lines
  ``image.jpg token`` per pair; token 0 = mismatched. The published files list the 3000 matched
  pairs first, then the 3000 mismatched ones; fold k holds the k-th tenth of each (FaceX-Zoo).
- insightface verification ``.bin`` [``bin:``]: a pickle of ``(bins, issame_list)``, read by a
  restricted unpickler; 10 consecutive folds as in insightface's ``KFold(10, shuffle=False)``.
- generic CSV [``csv:``]: header ``img1,img2,same[,fold]``, paths relative to the CSV's folder.

Readers check the lists, not the images: a missing or unreadable image surfaces when it is loaded,
and :func:`load_pairs_checked` skips such pairs with a count and a reason per image, never silently.
Folds are 0-based. Bad input raises :class:`~explainer_service.errors.InputError` naming the file
and line.

Modules: ``sources`` (image references and loading), ``pairs`` (:class:`Pair`, :class:`Dataset`,
folds), one reader per format (``lfw``, ``cfp``, ``ca_cp``, ``insightface_bin``, ``csv_pairs``),
``kinds`` (:func:`read_dataset`), ``loading`` (:func:`load_pairs_checked`) and ``prepare`` (pairs
chosen, loaded and aligned for an evaluation: :func:`~explainer_service.datasets.prepare.prepare_pairs`;
imported from its module, as it needs the aligner and the occluder, so reading a dataset stays light).
This front re-exports the public names of all but ``prepare``.
"""

from .ca_cp import read_calfw_pairs, read_cplfw_pairs
from .cfp import read_cfp_pairs
from .csv_pairs import read_csv_pairs
from .insightface_bin import read_bin_pairs, write_verification_bin
from .kinds import DATASET_KINDS, read_dataset
from .lfw import read_lfw_pairs
from .loading import LoadedPair, LoadReport, load_pairs_checked
from .pairs import ALIGNED_DIR, DEFAULT_FOLDS, Dataset, Pair, consecutive_folds
from .sources import ArrayImage, EncodedImage, ImageRef, ImageSource, load_pair_image, ref_name

__all__ = [
    "ImageSource",
    "ImageRef",
    "EncodedImage",
    "ArrayImage",
    "Pair",
    "Dataset",
    "DATASET_KINDS",
    "ALIGNED_DIR",
    "DEFAULT_FOLDS",
    "read_dataset",
    "read_lfw_pairs",
    "read_cfp_pairs",
    "read_cplfw_pairs",
    "read_calfw_pairs",
    "read_bin_pairs",
    "write_verification_bin",
    "read_csv_pairs",
    "consecutive_folds",
    "load_pair_image",
    "ref_name",
    "LoadedPair",
    "LoadReport",
    "load_pairs_checked",
]
