/// Monotonic time in nanoseconds, injected into every call of the state machine so tests and the
/// simulator run on a virtual clock.
public typealias Nanos = Int64

public extension Nanos {
    static func ms(_ value: Int64) -> Nanos { value * 1_000_000 }
    static func seconds(_ value: Double) -> Nanos { Nanos(value * 1e9) }
}

/// Every tunable of the membership protocol, with memberlist's LAN defaults where it has one
/// (memberlist `DefaultLANConfig`, Serf's defaults for the rest).
public struct SWIMSettings: Sendable, Equatable {
    /// Time between failure probes (scaled by local health).
    public var probeInterval: Nanos = .ms(1000)
    /// How long a direct ping waits for its ack before indirect probes go out (scaled by local health).
    public var probeTimeout: Nanos = .ms(500)
    /// Members asked to ping a target that did not answer (k).
    public var indirectChecks = 3
    /// Time between gossip rounds, and members gossiped to per round (fanout).
    public var gossipInterval: Nanos = .ms(200)
    public var gossipNodes = 3
    /// Dead members still receive gossip this long, so they learn it and can refute.
    public var gossipToTheDeadTime: Nanos = .seconds(30)
    /// Retransmit limit of a broadcast = retransmitMult × ceil(log10(N + 1)).
    public var retransmitMult = 4
    /// Suspicion timeout = suspicionMult × max(1, log10(N)) × probeInterval …
    public var suspicionMult = 4
    /// … shrinking from suspicionMaxTimeoutMult times that as independent confirmations arrive (Lifeguard).
    public var suspicionMaxTimeoutMult = 6
    /// Lifeguard local health: the score ranges over 0 ..< awarenessMaxMultiplier.
    public var awarenessMaxMultiplier = 8
    /// Full state exchange over TCP with one random member, scaled with cluster size above 32.
    public var pushPullInterval: Nanos = .seconds(30)
    /// How often to try to reach a random dead member again, so a healed partition merges.
    public var reconnectInterval: Nanos = .seconds(30)
    /// Dead and left members are forgotten after this long (tombstones).
    public var tombstoneTimeout: Nanos = .seconds(24 * 3600)
    /// First and longest wait between attempts to reach the seeds while alone.
    public var joinRetryMin: Nanos = .seconds(1)
    public var joinRetryMax: Nanos = .seconds(60)
    /// UDP packet budget for a compound message (primary message plus piggybacked broadcasts).
    public var packetBudget = 1400

    public init() {}

    /// Faster timings for tests on loopback (every ratio kept).
    public static var fastLocal: SWIMSettings {
        var s = SWIMSettings()
        s.probeInterval = .ms(200)
        s.probeTimeout = .ms(100)
        s.gossipInterval = .ms(50)
        s.pushPullInterval = .seconds(5)
        s.reconnectInterval = .seconds(2)
        s.joinRetryMin = .ms(200)
        s.joinRetryMax = .seconds(2)
        return s
    }
}
