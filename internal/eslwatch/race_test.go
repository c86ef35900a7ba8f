//go:build race

package eslwatch

// raceEnabled: the race detector slows the 100k-row tests about tenfold.
const raceEnabled = true
