"""Image quality and image statistics, pure functions of tensors: PSNR, SSIM and consistency
(:mod:`.quality`), and the statistics behind the analysis figures (:mod:`.statistics`). Models
(the SSIM reconstruction loss), evaluation and the figures all use them, so they sit low."""
