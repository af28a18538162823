"""Token-space editing with no inversion or fine-tuning: inpaint, outpaint, mask-free edit, image-to-image."""
