"""The Unicorn side: one module per architecture that runs guest probe code through the MMU."""
