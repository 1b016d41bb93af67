"""PARL controller that samples cell architectures and learns by REINFORCE."""
