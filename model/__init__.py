"""The MNIST network and the serving contract; imports nothing else of ours."""
