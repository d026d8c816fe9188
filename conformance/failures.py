"""What a failed property run tells apart from a property's own failed check."""


class KernelFailure(Exception):
    """The kernel raised, crashed or returned something the contract does not allow.

    Not an `AssertionError`: a property's own checks raise those, and a kill by a crash is
    reported apart from a kill by a property (tests/test_property_strength.py demands the
    latter)."""
