"""The captions of the algorithmic kind's figures, by file name (a light module: the kind's
registry entry reads them without importing matplotlib)."""

# figures we know, in reading order, with a caption each; others follow alphabetically
CAPTIONS = {
    "training_curves": "Loss and accuracy over training (log epoch axis).",
    "loss_phases": "Train and test loss with the automatically found phases shaded.",
    "progress_measures": "Progress measures over training: restricted and excluded loss, Gini "
    "sparsity of the embedding and unembedding in the Fourier basis, weight norm.",
    "embedding_fourier_norms": "Norm of each Fourier component of the embedding.",
    "key_frequency_circles": "The embedding projected on each key frequency's cos / sin "
    "directions: the inputs lie on circles.",
    "neuron_frequency_histogram": "How many MLP neurons are dominated by each frequency.",
    "logit_fourier_spectrum": "2-D Fourier spectrum of the logits over the (a, b) grid.",
    "embedding_evolution": "Clouds to circles: each residue's embedding on the plane of its "
    "frequency-k components, k the final checkpoint's most circular key frequency (colour: "
    "position on the operand grid), at checkpoints spread over training, each titled with its "
    "phase; embedding_evolution.gif animates every analysed checkpoint.",
    "geometry": "Geometry over training: circularity of the embedding (mean over key "
    "frequencies, best frequency, PCA-based), Fourier IPR and RQI, the clock-vs-pizza "
    "diagnostics (distance irrelevance, gradient symmetricity) and ILDR; dotted: t_mem, t_grok. "
    "The best frequency's curve is its plane's share of all the embedding's variance: with k key "
    "frequencies sharing the embedding it ends near 1/k even when each plane holds a perfect "
    "circle (the circles figure). RQI counts closed parallelograms E(a) + E(b) = E(c) + E(d) "
    "over a + b = c + d (mod p), which a line closes and a circle does not, so it stays near 0 "
    "for a model that computes with circles.",
    "curvature": "Curvature of the training loss (top Hessian eigenvalue, trace, norm-scaled and "
    "scaled-Hessian sharpness λ_max(D H D), with the training loss) and the local learning "
    "coefficient.",
}
