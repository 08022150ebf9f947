import ArgumentParser
import Foundation
import Logging
import SyncDaemon

/// `syncd daemon`: every option is optional and overrides one field of `DaemonConfiguration`,
/// whose defaults (shown in the help) are the only ones.
struct DaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "daemon", abstract: "Run the syncd daemon in the foreground.")

    /// For the help text only: the daemon starts from `DaemonConfiguration(home:)` with its real home.
    private static let defaults = DaemonConfiguration(home: Home(path: "/"))

    @OptionGroup var home: HomeOption

    @Option(help: "Address for gossip (UDP) and peer sessions (TCP), HOST:PORT (default: \(defaults.network.listen)).")
    var listen: String?

    @Option(help: "A member to join, HOST:PORT (repeatable).")
    var join: [String] = []

    @Option(help: "Address announced to other members, HOST:PORT (default: --listen, or this host's first IPv4 address when listening on 0.0.0.0).")
    var advertise: String?

    @Option(help: "Cluster key, 32 bytes as hex or base64: gossip without it is ignored (openssl rand -base64 32).")
    var gossipKey: String?

    @Option(help: "UDP port of the LAN discovery beacon (default: \(defaults.network.beaconPort.map(String.init) ?? "off")).")
    var beaconPort: Int?

    @Flag(help: "Do not send or listen for LAN discovery beacons.")
    var noLanBeacon = false

    @Option(help: "Days deleted files stay in each folder's .syncd/trash (default: \(defaults.replication.trashDays.formatted)).")
    var trashDays: Double?

    @Option(help: "Conflict copies kept per file; older ones move to the trash (default: \(defaults.replication.maxConflicts)).")
    var maxConflicts: Int?

    @Option(help: "Full rescan interval in seconds, a safety net behind inotify, jittered ±10% (default: \(defaults.scanning.rescanInterval.formatted)).")
    var rescanInterval: Double?

    @Option(help: "Seconds between keepalive pings on each peer session (default: \(defaults.keepalive.interval.inSeconds.formatted)).")
    var keepaliveInterval: Double?

    @Option(help: "Seconds of silence after which a peer session is closed and redialled, more than --keepalive-interval (default: \(defaults.keepalive.timeout.inSeconds.formatted)).")
    var keepaliveTimeout: Double?

    @Flag(help: "Move a damaged index aside (index.db.damaged-TIME) and rebuild it from the folders on disk and from peers; nothing is deleted on peers.")
    var rebuildIndex = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    /// `DaemonConfiguration(home:)`'s defaults with every option given on the command line applied.
    var daemonConfiguration: DaemonConfiguration {
        var c = DaemonConfiguration(home: home.resolved)
        if let listen { c.network.listen = listen }
        if !join.isEmpty { c.network.join = join }
        if let advertise { c.network.advertise = advertise }
        if let gossipKey { c.network.gossipKey = gossipKey }
        if let beaconPort { c.network.beaconPort = beaconPort }
        if noLanBeacon { c.network.beaconPort = nil }
        if let trashDays { c.replication.trashDays = trashDays }
        if let maxConflicts { c.replication.maxConflicts = maxConflicts }
        if let rescanInterval { c.scanning.rescanInterval = rescanInterval }
        if let keepaliveInterval { c.keepalive.interval = .seconds(keepaliveInterval) }
        if let keepaliveTimeout { c.keepalive.timeout = .seconds(keepaliveTimeout) }
        return c
    }

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level \(logLevel)") }
        do { try daemonConfiguration.validate() } catch let invalid as DaemonConfiguration.Invalid {
            throw ValidationError(invalid.description)
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "syncd")
        do {
            let daemon = try Daemon(configuration: daemonConfiguration, logger: logger, rebuildIndex: rebuildIndex)
            try await daemon.run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }
}

private extension Duration {
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

private extension Double {
    /// "30", "0.5": no trailing ".0" in the help text.
    var formatted: String { rounded() == self ? String(Int(self)) : String(self) }
}
