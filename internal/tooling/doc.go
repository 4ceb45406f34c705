// Package tooling holds no code of its own: its sub-packages are what the
// project uses around the service, never inside it. llmsim simulates the LLM
// provider; redisproc and redistest start throwaway redis-server processes;
// stack runs the service's binaries as processes; e2e, deploy and chaos test
// them; bench measures them; ttctl is the command-line client.
//
// Nothing under internal/ outside this folder imports these packages except
// from tests.
package tooling
