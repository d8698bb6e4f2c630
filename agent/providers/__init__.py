"""Model providers behind one seam (``base.ModelClient``); pick one by model string with ``registry``."""
