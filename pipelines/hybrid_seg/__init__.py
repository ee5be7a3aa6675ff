"""hybrid-seg: HybridNet (CNN + transformer, HoVer-Net heads) for semantic and instance segmentation of nuclei,
with metadata fusion, explanations, generative augmentation, few-shot adaptation and deployment
(docs/papers/hybrid-seg.md)."""

from medrun.pipelines import PipelineSpec

SPEC = PipelineSpec(
    slug="hybrid-seg",
    title="HybridNet (CNN + transformer) semantic and instance segmentation of nuclei",
    paper="Deep Learning Framework for Semantic and Instance Segmentation in Medical Imaging (outline; "
          "design fixed by the hybrid-seg card)",
    card="hybrid-seg",
    datasets=("pannuke", "consep"),
    stages=("train", "eval", "predict", "fusions", "explain", "gen-train", "generate", "synth-train", "adapt",
            "compress", "bench", "export-onnx", "export-review"),
    manifest="medrun.pipelines.hybrid_seg.config:HybridSegManifest",
    impl="medrun.pipelines.hybrid_seg.pipeline:HybridSeg",
    parents={"eval": "train", "predict": "train", "explain": "train", "adapt": "train", "compress": "train",
             "bench": "train", "export-onnx": "train", "export-review": "train", "generate": "gen-train",
             "synth-train": "gen-train"},
    stage_help={
        "fusions": "One train run per metadata fusion mode (none, input, film, token, gated) and the CNN-only "
                   "ablation; one table of NP Dice, bPQ, mPQ and AJI.",
        "explain": "captum explanations of a trained HybridNet: Integrated Gradients, LayerGradCam on S4, Occlusion, "
                   "Grad-CAM++, InstanceContrast-IG and metadata importance; deletion/insertion AUC and pointing game.",
        "gen-train": "Train the conditional image generator (gen.kind: a diffusers DDPM or pix2pix) on type + "
                     "boundary maps of the training masks.",
        "generate": "Sample image/label pairs from a gen-train run (DDIM for the DDPM) on augmented real conditions; "
                    "FID_seg against real patches.",
        "synth-train": "Train HybridNet with a fraction ρ (synth_train.rho) of each batch from a gen-train "
                       "run's generator (TSTR at ρ = 1).",
        "adapt": "Few-shot adaptation of a PanNuke-trained model to CoNSeP: zero-shot score, then full fine-tuning "
                 "or LoRA (peft) on k shots; sliced-Wasserstein domain gap.",
        "compress": "L1 structured pruning (30/50 %, fine-tuned) and int8 quantisation (dynamic; static FX) of a "
                    "trained model; sizes, sparsity and the PQ/Dice drop.",
        "bench": "CPU latency (median of 50 runs after 10 warm-ups, batch 1) of fp32, int8-dynamic and ONNX Runtime "
                 "on the same input; peak RSS.",
        "export-onnx": "Export a trained model to ONNX (opset 17) and check onnxruntime against PyTorch on the same "
                       "input.",
        "export-review": "A blinded reader-study pack (overlays and a CSV key) as a stub for clinical validation.",
    },
    examples={
        "fusions": "medrun fusions hybrid-seg --dataset pannuke --fixture",
        "explain": "medrun explain hybrid-seg --dataset pannuke --fixture",
        "gen-train": "medrun gen-train hybrid-seg --dataset pannuke --fixture -o gen.kind=ddpm",
        "generate": "medrun generate hybrid-seg --dataset pannuke --fixture",
        "synth-train": "medrun synth-train hybrid-seg --dataset pannuke --fixture -o synth_train.rho=0.5",
        "adapt": "medrun adapt hybrid-seg --dataset pannuke --fixture -o adapt.mode=lora -o adapt.shots=1",
        "compress": "medrun compress hybrid-seg --dataset pannuke --fixture",
        "bench": "medrun bench hybrid-seg --dataset pannuke --fixture",
        "export-onnx": "medrun export-onnx hybrid-seg --dataset pannuke --fixture",
        "export-review": "medrun export-review hybrid-seg --dataset pannuke --fixture",
    },
    no_export="three heads (NP, HV, NC) plus watershed post-processing do not fit a MONAI bundle's one-mask "
              "output; `medrun export-onnx hybrid-seg` writes the network as ONNX checked by onnxruntime",
)
