"""hamming-retrieval: multi-label chest X-ray retrieval with binary codes whose Hamming distance is trained to follow
the Jaccard overlap of label sets (card: docs/papers/hamming-retrieval.md).

The manifest lives in ``config.py``, the method in ``pipeline.py`` (losses in ``hashing.py``, the exact Hamming
search in ``search.py``), the extra stages in ``split.py``, ``index.py`` and ``retrieve.py``, the paper's tables in
``paper.yaml``.
"""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="hamming-retrieval",
    title="Hamming-distance hashing for multi-label retrieval",
    paper="Learning Neural Networks for Multi-label Medical Image Retrieval Using Hamming Distance Fabricated with "
          "Jaccard Similarity Coefficient (Manna & Sheet)",
    card="hamming-retrieval",
    datasets=("nih",),
    stages=("split", "train", "eval", "index", "retrieve"),
    manifest="medrun.pipelines.hamming_retrieval.config:HammingManifest",
    impl="medrun.pipelines.hamming_retrieval.pipeline:HammingRetrieval",
    parents={"eval": "train", "index": "train", "retrieve": "index"},
    stage_help={
        "split": "Select the NIH images with one of the 13 findings and write the train / gallery / query lists "
                 "(75/20/5 %, seed 3407) with per-finding counts.",
        "index": "Encode the gallery of a finished train run into packed binary codes (index/codes.npz) for exact "
                 "Hamming search with faiss.",
        "retrieve": "Query images → the top-k gallery images of an index run, with their labels and Hamming "
                    "distances (--run INDEX_ID, or --checkpoint FILE with -o retrieve.index=FILE).",
    },
    examples={
        "split": "medrun split hamming-retrieval --dataset nih --fixture",
        "train": "medrun train hamming-retrieval --dataset nih --fixture\n\n"
                 "  medrun train hamming-retrieval --dataset nih --data-dir ~/data/nih -o model.code_bits=32",
        "eval": "medrun eval hamming-retrieval --dataset nih --fixture -o eval.idcg=gallery",
        "index": "medrun index hamming-retrieval --dataset nih --fixture",
        "retrieve": "medrun retrieve hamming-retrieval --dataset nih --fixture -o retrieve.top_k=5\n\n"
                    "  medrun retrieve hamming-retrieval --dataset nih --fixture -o retrieve.input=path/to/xrays",
    },
    no_export="retrieval needs the gallery's codes beside the network; a MONAI bundle holds a network and its "
              "pre/post-processing only (use the index run's index/codes.npz with the train run's weights)",
)
