"""``xling edit``: change one fact in one language, and measure whether the change reaches the others."""
