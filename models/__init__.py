"""packwise models: the synthetic fulfillment-center world, the multimodal damage model, training,
calibration and certification, and the versioned bundle the workers load."""
