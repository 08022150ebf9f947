import Foundation
import SyncGossip
import SyncWire

/// Everything `syncd daemon` is told on its command line, with every default documented.
public struct DaemonConfiguration: Sendable {
    public var home: Home
    /// Address for gossip (UDP) and sessions (TCP); used from the gossip issue on. Default 0.0.0.0:7700.
    public var listen: String = "0.0.0.0:7700"
    /// Seed members to join (HOST:PORT); used from the gossip issue on.
    public var join: [String] = []
    /// Address announced to other members; default: `listen`, or the first non-loopback IPv4
    /// address when `listen` is a wildcard.
    public var advertise: String?
    /// Optional cluster key (32 bytes, hex or base64): gossip of members without it is dropped.
    public var gossipKey: String?
    /// UDP port of the LAN discovery beacon; nil turns the beacon off. Default 7701.
    public var beaconPort: Int? = 7701
    /// Days deleted files stay in a folder's `.syncd/trash/`. Default 30.
    public var trashDays: Double = 30
    /// Conflict copies kept per file; older ones move to the trash. Default 10.
    public var maxConflicts = 10
    /// Session keepalive (Protocol/wire.md, "Keepalive"): each end pings every `interval`, default
    /// 2 s; a session that hears nothing for `timeout`, default 6 s, is closed and redialled.
    /// `timeout` must exceed `interval`.
    public var keepalive = DaemonConfiguration.defaultKeepalive
    public static let defaultKeepalive = SessionLiveness.Settings(interval: .seconds(2), timeout: .seconds(6))
    /// Membership timings (memberlist's LAN defaults).
    public var gossip = SWIMSettings()
    /// Full rescan safety net, jittered ±10 %. Default one hour.
    public var rescanInterval: TimeInterval = 3600
    /// Rescan period when inotify is unavailable or out of watches. Default one minute.
    public var degradedRescanInterval: TimeInterval = 60

    /// How long stopping a folder (`syncd remove`, shutdown) waits for its apply or scan in
    /// progress before going on without it, in seconds. Default 30 s.
    public var stopTimeout: TimeInterval = 30

    public init(home: Home) { self.home = home }
}
