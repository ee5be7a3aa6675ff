"""fed-memory: federated heterogeneous brain-tumour MRI classifiers on Flower, with conversational memory elements
(card: shared/papers/fed-memory.md). The manifest lives in ``config.py``, the method in ``pipeline.py``."""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="fed-memory",
    title="Federated dynamics via conversational memory elements",
    paper="Visualizing Dynamics of Federated Medical Models via Conversational Memory Elements",
    card="fed-memory",
    datasets=("brain-tumor-mri", "imagefolder"),
    stages=("train", "eval", "predict", "visualize", "analyze"),
    manifest="medrun.pipelines.fed_memory.config:FedMemoryManifest",
    impl="medrun.pipelines.fed_memory.pipeline:FedMemory",
    parents={"eval": "train", "predict": "train", "visualize": "train", "analyze": "train"},
    stage_help={
        "visualize": "CME covariance heat-maps per t-round and client, ACF curves per client, federated accuracy "
                     "curves, from a finished train run.",
        "analyze": "Covariance stabilisation scores, saturation round per client and the ACF stability table "
                   "(our numeric proxies for the paper's visual claims), from a finished train run.",
    },
    examples={
        "train": "medrun train fed-memory --dataset brain-tumor-mri --fixture\n\n"
        "  medrun train fed-memory --dataset brain-tumor-mri --data-dir ~/kaggle/brain-tumor -o fed.scenario=4\n\n"
        "  medrun train fed-memory --dataset brain-tumor-mri --data-dir ~/kaggle/brain-tumor -o dataset.img_size=64 "
        "-o dataset.subset=600 -o train.rounds=3 -o train.epochs=2",
        "eval": "medrun eval fed-memory --dataset brain-tumor-mri --fixture",
        "predict": "medrun predict fed-memory --run <train id> -o predict.input=new_scans/\n\n"
        "  medrun train fed-memory --dataset imagefolder --data-dir data/images -o model.num_classes=3",
        "visualize": "medrun visualize fed-memory --dataset brain-tumor-mri --fixture",
        "analyze": "medrun analyze fed-memory --dataset brain-tumor-mri --fixture",
    },
    no_export="three federated clients with different backbones are not one network; each client's weights are "
              "in the train run's checkpoints/client<k>.safetensors",
)
