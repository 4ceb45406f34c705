// Package deploy has no code of its own: its tests check the deployment
// files, which no Docker engine or cluster runs here.
//
//   - The Dockerfiles' "RUN go build" commands are parsed and run as they
//     are (same flags, same environment, on a copy of the build context that
//     .dockerignore leaves), and the binaries are checked to be static and to
//     carry the injected version.
//   - docker-compose.yml is decoded strictly and its environments are loaded
//     with the service's own configuration loader.
//   - Every kustomize overlay under k8s/ is rendered with kustomize's Go API
//     and each object is decoded strictly (an unknown or misspelled field is
//     an error) into the Kubernetes API types, or into local types for the
//     KEDA and Prometheus Operator kinds; then invariants across objects are
//     checked (probes, limits, shutdown timing, references, scaling).
//   - The KEDA triggers' list names are checked against the keys asynq
//     really writes, by enqueuing and running tasks in a real Redis, and
//     for the sentinel and cluster overlays in a real Sentinel group and
//     a real Redis Cluster, through the service's configuration loaded
//     from the rendered manifests.
package deploy
