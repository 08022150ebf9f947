import Foundation

/// The protocol's formulas, kept apart so their exact values are tested the way memberlist tests
/// its own (`util_test.go`, `suspicion_test.go`).
public enum SWIMMath {
    /// Minimum suspicion timeout: mult × max(1, log10(max(1, n))) × interval, at millisecond resolution.
    public static func suspicionTimeout(mult: Int, n: Int, interval: Nanos) -> Nanos {
        let nodeScale = max(1.0, log10(Double(max(1, n))))
        return Nanos(mult) * Nanos(nodeScale * 1000) * interval / 1000
    }

    /// How many times a broadcast is retransmitted: mult × ceil(log10(n + 1)).
    public static func retransmitLimit(mult: Int, n: Int) -> Int {
        mult * Int(ceil(log10(Double(n + 1))))
    }

    /// Push/pull interval scaled with cluster size: unchanged up to 32 members, then one more
    /// multiple for every doubling (memberlist `pushPullScale`).
    public static func pushPullScale(interval: Nanos, n: Int) -> Nanos {
        let threshold = 32.0
        if Double(n) <= threshold { return interval }
        let multiplier = ceil(log2(Double(n)) - log2(threshold)) + 1
        return Nanos(multiplier) * interval
    }

    /// Lifeguard's remaining suspicion time after `confirmations` independent confirmations of the
    /// `k` expected: the timeout falls logarithmically from `max` to `min`, minus what already elapsed.
    public static func remainingSuspicionTime(confirmations n: Int, k: Int, elapsed: Nanos, min: Nanos, max: Nanos) -> Nanos {
        let frac = log(Double(n) + 1) / log(Double(k) + 1)
        let raw = Double(max) / 1e9 - frac * Double(max - min) / 1e9
        var timeout = Nanos(floor(1000 * raw)) * 1_000_000
        if timeout < min { timeout = min }
        return timeout - elapsed
    }

    /// Scales a timeout by local health: (score + 1) × timeout.
    public static func scaled(_ timeout: Nanos, health score: Int) -> Nanos { timeout * Nanos(score + 1) }
}
