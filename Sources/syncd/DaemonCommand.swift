import ArgumentParser
import Foundation
import Logging
import SyncDaemon

/// `syncd daemon`: every option is optional and overrides one field of `DaemonConfiguration`,
/// whose defaults (shown in the help) are the only ones. The config file and the `SYNCD_*`
/// environment set the same options (`DeclaredConfiguration`); precedence: flags, then the
/// environment, then the file, then the defaults.
struct DaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon", abstract: "Run the syncd daemon in the foreground.",
        discussion: """
            Every option can also be set in the config file (YAML; the key is the option's name with _ for -, \
            e.g. trash_days) and in the environment (SYNCD_ and the key in capitals, e.g. SYNCD_TRASH_DAYS). \
            An option given here beats the environment, which beats the file. The file also lists the folders \
            to share (folders:), added at start. See Docs/UserGuide.md, "Configuration".
            """)

    /// For the help text only: the daemon starts from `DaemonConfiguration(home:)` with its real home.
    private static let defaults = DaemonConfiguration(home: Home(path: "/"))

    @OptionGroup var home: HomeOption

    @Option(help: ArgumentHelp("YAML config file (default: $SYNCD_CONFIG, else <home>/syncd.yaml if it exists).", valueName: "file"))
    var config: String?

    @Option(help: "Address for gossip (UDP) and peer sessions (TCP), HOST:PORT (default: \(defaults.network.listen)).")
    var listen: String?

    @Option(help: "A member to join, HOST:PORT (repeatable).")
    var join: [String] = []

    @Option(help: "Address announced to other members, HOST:PORT (default: --listen; on 0.0.0.0, the address of this host's default route, logged at start).")
    var advertise: String?

    @Option(help: "Cluster key, 32 bytes as hex or base64: gossip without it is ignored (openssl rand -base64 32). Visible in ps: prefer --gossip-key-file.")
    var gossipKey: String?

    @Option(help: ArgumentHelp("File holding the cluster key (see --gossip-key).", valueName: "file"))
    var gossipKeyFile: String?

    @Option(help: "UDP port of the LAN discovery beacon (default: \(defaults.network.beaconPort.map(String.init) ?? "off")).")
    var beaconPort: Int?

    @Flag(help: "Do not send or listen for LAN discovery beacons.")
    var noLanBeacon = false

    @Flag(inversion: .prefixedNo,
          help: "Offer per-chunk deflate on peer sessions; used when both peers offer it, for chunks it makes at least 10% smaller (default: \(defaults.network.compression ? "on" : "off")).")
    var compression: Bool?

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

    @Option(help: "Serve /metrics, /healthz, /readyz, /api/status, /api/events and a status page at /, on HOST:PORT (default: off). Not on loopback, --http-token-file is required.")
    var http: String?

    @Option(help: ArgumentHelp("File holding the token HTTP requests must carry (Authorization: Bearer TOKEN; a browser gives it as the password); at least \(DaemonConfiguration.HTTP.minimumTokenLength) characters.", valueName: "file"))
    var httpTokenFile: String?

    @Option(help: ArgumentHelp("Shell command run after each batch applied from a peer, with the changed paths on stdin and in SYNCD_PATHS (every folder without its own on_apply in the config file).", valueName: "command"))
    var onApply: String?

    @Option(help: "Seconds an --on-apply command may run before it is stopped (default: \(defaults.hooks.timeout.formatted)).")
    var onApplyTimeout: Double?

    @Flag(help: "Move a damaged index aside (index.db.damaged-TIME) and rebuild it from the folders on disk and from peers; nothing is deleted on peers.")
    var rebuildIndex = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (default: info).")
    var logLevel: String?

    @Option(help: "Log format: text, or json (one object per line, UTC times in milliseconds) (default: text).")
    var logFormat: String?

    @Option(help: "Group whose members may use the control socket (syncd status, syncd wait) without sudo (default: the daemon's user only).")
    var controlGroup: String?

    /// The options given on the command line, as the config file would declare them.
    var flags: [DeclaredOption: DeclaredValue] {
        var f: [DeclaredOption: DeclaredValue] = [:]
        if let listen { f[.listen] = .string(listen) }
        if !join.isEmpty { f[.join] = .strings(join) }
        if let advertise { f[.advertise] = .string(advertise) }
        if let gossipKey { f[.gossipKey] = .string(gossipKey) }
        if let gossipKeyFile { f[.gossipKeyFile] = .string(gossipKeyFile) }
        if let beaconPort { f[.beaconPort] = .int(beaconPort) }
        if noLanBeacon { f[.noLanBeacon] = .bool(true) }
        if let compression { f[.compression] = .bool(compression) }
        if let trashDays { f[.trashDays] = .double(trashDays) }
        if let maxConflicts { f[.maxConflicts] = .int(maxConflicts) }
        if let rescanInterval { f[.rescanInterval] = .double(rescanInterval) }
        if let keepaliveInterval { f[.keepaliveInterval] = .double(keepaliveInterval) }
        if let keepaliveTimeout { f[.keepaliveTimeout] = .double(keepaliveTimeout) }
        if let logLevel { f[.logLevel] = .string(logLevel) }
        if let logFormat { f[.logFormat] = .string(logFormat) }
        if let controlGroup { f[.controlGroup] = .string(controlGroup) }
        if let http { f[.http] = .string(http) }
        if let httpTokenFile { f[.httpTokenFile] = .string(httpTokenFile) }
        if let onApply { f[.onApply] = .string(onApply) }
        if let onApplyTimeout { f[.onApplyTimeout] = .double(onApplyTimeout) }
        return f
    }

    /// `DaemonConfiguration(home:)`'s defaults, then the config file, then the environment, then
    /// the options given on the command line; checked, so the daemon never starts with a value
    /// it cannot run with.
    func resolve(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ResolvedConfiguration {
        try DeclaredConfiguration.resolve(home: Home.resolve(explicit: home.home, environment: environment),
                                          configPath: config, flags: flags, environment: environment)
    }

    /// Refused before anything is created: a wrong option shows the usage, a wrong file or
    /// variable only the message naming it.
    func validate() throws {
        do { _ = try resolve() } catch let error as ConfigurationError where error.byFlag {
            throw ValidationError(error.description)
        }
    }

    func run() async throws {
        let resolved = try resolve()
        let level = LogLevelControl(resolved.logLevel)
        let format = resolved.logFormat
        LoggingSystem.bootstrap { label in level.handler(label: label, format: format) }
        let logger = Logger(label: "syncd")
        if let file = resolved.file { logger.info("configuration from \(file)") }
        resolved.warnings.forEach { logger.warning("\($0)") }
        // SIGHUP: the same file, environment and flags read again; the log level applies at once.
        let (explicitHome, configPath, flags) = (home.home, config, self.flags)
        let reload: @Sendable () throws -> DaemonConfiguration = {
            let environment = ProcessInfo.processInfo.environment
            let again = try DeclaredConfiguration.resolve(home: Home.resolve(explicit: explicitHome, environment: environment),
                                                          configPath: configPath, flags: flags, environment: environment)
            again.warnings.forEach { logger.warning("\($0)") }
            if again.logLevel != level.level {
                logger.notice("reload: log level \(again.logLevel)")
                level.level = again.logLevel
            }
            return again.configuration
        }
        do {
            let daemon = try Daemon(configuration: resolved.configuration, logger: logger, rebuildIndex: rebuildIndex,
                                    reload: reload, notifier: ServiceNotifier())
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
