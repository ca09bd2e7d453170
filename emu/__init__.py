"""foliowalk: Linux folio_walk over real page tables, confirmed by Unicorn's MMU."""

__version__ = "0.1.0"
