//go:build !race

package eslwatch

const raceEnabled = false
