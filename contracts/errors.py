"""The one error every validator of the contract raises for input it does not allow."""


class ContractError(ValueError):
    """An input that breaks a calling convention (docs/contract.md): the message names the
    argument, what was expected and what came."""
