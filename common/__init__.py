"""What train/ and serving/ both need beyond the network: MNIST files and TensorFlow's quiet start-up."""
