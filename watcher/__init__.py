"""ws-watcher: a containerd-native watcher of Kubernetes workspace pods."""
