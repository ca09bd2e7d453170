"""Suite-wide settings.

Hypothesis's per-example deadline (200 ms by default) is a timing assertion: on a loaded machine
(CI's two cores running two test workers, emulators and compilers) a correct example can exceed
it.  The project puts no timing assertions in tests, so the deadline and the "too slow" health
check are off for every property test; each test's own ``@settings`` still sets its size.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("foliowalk", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("foliowalk")
