import ArgumentParser
import Foundation
import Logging
import SyncDaemon

struct DaemonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "daemon", abstract: "Run the syncd daemon in the foreground.")

    @OptionGroup var home: HomeOption

    @Option(help: "Address for gossip (UDP) and peer sessions (TCP), HOST:PORT.")
    var listen: String = "0.0.0.0:7700"

    @Option(help: "A member to join, HOST:PORT (repeatable).")
    var join: [String] = []

    @Option(help: "Address announced to other members, HOST:PORT (default: --listen, or this host's first IPv4 address when listening on 0.0.0.0).")
    var advertise: String?

    @Option(help: "Cluster key, 32 bytes as hex or base64: gossip without it is ignored (openssl rand -base64 32).")
    var gossipKey: String?

    @Option(help: "UDP port of the LAN discovery beacon.")
    var beaconPort: Int = 7701

    @Flag(help: "Do not send or listen for LAN discovery beacons.")
    var noLanBeacon = false

    @Option(help: "Days deleted files stay in each folder's .syncd/trash.")
    var trashDays: Double = 30

    @Option(help: "Conflict copies kept per file (older ones move to the trash).")
    var maxConflicts: Int = 10

    @Option(help: "Full rescan interval in seconds (safety net behind inotify; jittered ±10%).")
    var rescanInterval: Double = 3600

    @Option(help: "Seconds between keepalive pings on each peer session.")
    var keepaliveInterval: Double = DaemonConfiguration.defaultKeepalive.interval.inSeconds

    @Option(help: "Seconds of silence after which a peer session is closed and redialled (more than --keepalive-interval).")
    var keepaliveTimeout: Double = DaemonConfiguration.defaultKeepalive.timeout.inSeconds

    @Flag(help: "Move a damaged index aside (index.db.damaged-TIME) and rebuild it from the folders on disk and from peers; nothing is deleted on peers.")
    var rebuildIndex = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level \(logLevel)") }
        for address in [listen] + join where address.split(separator: ":").count < 2 {
            throw ValidationError("\(address) is not HOST:PORT")
        }
        guard rescanInterval > 0 else { throw ValidationError("--rescan-interval must be positive") }
        guard trashDays >= 0 else { throw ValidationError("--trash-days cannot be negative") }
        guard maxConflicts >= 1 else { throw ValidationError("--max-conflicts must be at least 1") }
        guard keepaliveInterval >= 0.01 else { throw ValidationError("--keepalive-interval must be at least 0.01") }
        guard keepaliveTimeout > keepaliveInterval else {
            throw ValidationError("--keepalive-timeout must be longer than --keepalive-interval")
        }
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var config = DaemonConfiguration(home: home.resolved)
        config.listen = listen
        config.join = join
        config.rescanInterval = rescanInterval
        config.advertise = advertise
        config.trashDays = trashDays
        config.maxConflicts = maxConflicts
        config.gossipKey = gossipKey
        config.beaconPort = noLanBeacon ? nil : beaconPort
        config.keepalive = .init(interval: .seconds(keepaliveInterval), timeout: .seconds(keepaliveTimeout))
        let logger = Logger(label: "syncd")
        do {
            let daemon = try Daemon(configuration: config, logger: logger, rebuildIndex: rebuildIndex)
            try daemon.run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }
}

private extension Duration {
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
