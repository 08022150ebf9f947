import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SyncCore
import SyncFS
import SyncGossip
import SyncSecurity
import SyncStore
import SyncWire

/// The composition root: opens the home (lock, identity, index), then `run()` runs its parts — a
/// `FolderService` and `FolderExchange` per folder, the session listener, gossip, the dialer and the
/// control server — as a `ServiceGroup` until SIGTERM or SIGINT.
public final class Daemon: @unchecked Sendable {
    public let configuration: DaemonConfiguration
    public let identity: DeviceIdentity
    private let store: IndexStore
    private let logger: Logger
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var control: ControlServer?
    private let lock = Lock()
    /// Every shared folder at run time (its scanner and replication halves), by path.
    private var folders: [String: FolderRuntime] = [:]

    /// The folders that serve sessions, by public folder id (what the session listener routes by).
    private var exchanges: [[UInt8]: FolderExchange] {
        Dictionary(folders.values.compactMap { r in r.exchange.map { (r.folderID, $0) } }, uniquingKeysWith: { a, _ in a })
    }
    private var sessions: SessionServer?
    private var gossip: GossipService?
    private var dialing: Set<[UInt64]> = []
    /// When a member that gossip does not call alive was last dialled (member, folder).
    private var lastUnconfirmedDial: [[UInt64]: DispatchTime] = [:]
    /// Members gossip calls suspect or dead (a partition, say) are still dialled this often
    /// (seconds): an authenticated session proves they are back long before gossip does.
    static let unconfirmedDialInterval = 2.0
    /// Every established session, for RTTs and for closing the quiet ones of a member gossip found again.
    private let sessionTable = SessionTable()
    private var dialer: RepeatedTask?
    private var listenAddress: String?
    private var lockFD: Int32 = -1
    /// Set when shutdown begins: control requests are refused from then on.
    private var stopping = false
    /// Set once every part has started (READY=1): a reload waits for it.
    private var serving = false
    /// The folders the configuration declares now: the started one's, then each reload's.
    private var declared: [DaemonConfiguration.Folder]
    /// Reads the configuration again (SIGHUP); nil when there is nothing to reload from.
    private let reloader: (@Sendable () throws -> DaemonConfiguration)?
    /// systemd's notification socket (`Type=notify`), nil when not run by systemd.
    private let notifier: ServiceNotifier?
    private var watchdog: RepeatedTask?
    /// `control.group` as a number, resolved once at start.
    private let controlGroup: gid_t?
    /// What happens to the folders (`DaemonEvents`): `/api/events`, the hooks and the metrics read it.
    public let events = DaemonEvents()
    /// The HTTP endpoint's bound address, once it listens.
    private var httpAddress: String?
    /// What status queries remember per folder (by path): the pending set's progress, each peer's lag.
    private let memory = Locked<[String: FolderMemory]>([:])
    struct FolderMemory { var progress = FolderProgress(); var lag = LagClock() }

    public enum StartError: Error, CustomStringConvertible {
        case alreadyRunning(String), home(String), listen(String), folders(String)
        public var description: String {
            switch self {
            case .alreadyRunning(let h): return "another syncd daemon is already running with home \(h)"
            case .home(let why), .listen(let why), .folders(let why): return why
            }
        }
    }

    /// `rebuildIndex` (`syncd daemon --rebuild-index`): move the index aside and start from a new
    /// one holding the same folders, each with unknown contents (IndexStore.rebuild).
    /// `reload`: reads the configuration again on SIGHUP (`reload()`); `notifier`: tells systemd
    /// when the daemon is ready, reloading and stopping, and keeps its watchdog fed.
    public init(configuration: DaemonConfiguration, logger: Logger, rebuildIndex: Bool = false,
                reload: (@Sendable () throws -> DaemonConfiguration)? = nil, notifier: ServiceNotifier? = nil) throws {
        self.configuration = configuration
        self.logger = logger
        self.declared = configuration.folders
        self.reloader = reload
        self.notifier = notifier
        self.controlGroup = configuration.control.group.flatMap(DaemonConfiguration.groupID)
        let home = configuration.home
        // Another daemon on this home is named as such (its port is taken too), and a port that
        // cannot be bound stops the daemon before it creates anything.
        let running = open(home.lockPath, O_RDWR | O_CLOEXEC)
        if running >= 0 {
            let free = flock(running, LOCK_EX | LOCK_NB) == 0
            close(running)   // releases the probe's lock
            guard free else { throw StartError.alreadyRunning(home.path) }
        }
        try Self.checkListen(configuration.network.listen, group: group)
        if let http = configuration.http.listen { try Self.checkHTTP(http, group: group) }
        do {
            let wanted = controlGroup == nil ? "0700" : "0710 (control group \(configuration.control.group ?? ""))"
            if let (was, changed) = try home.create(controlGroup: controlGroup) {
                let mode = String(was, radix: 8)
                if changed {
                    logger.notice("home \(home.path) was mode \(mode); made it \(wanted) (it holds the folder secrets)")
                } else {
                    logger.warning("home \(home.path) is mode \(mode) and cannot be made \(wanted) (another user owns it?): it holds the folder secrets")
                }
            }
        } catch {
            throw StartError.home("cannot create home \(home.path): \(error.localizedDescription)")
        }
        lockFD = open(home.lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else { throw StartError.alreadyRunning(home.path) }
        identity = try DeviceIdentity.loadOrCreate(at: home.deviceKeyPath)
        // The index holds folder secrets: it exists 0600 before SQLite opens it, because SQLite
        // gives the -wal and -shm files it creates the database file's mode.
        let created = open(home.indexPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if created >= 0 { fchmod(created, 0o600); close(created) }
        for suffix in ["-wal", "-shm"] { chmod(home.indexPath + suffix, 0o600) }
        store = try rebuildIndex ? Self.rebuild(home.indexPath, logger: logger) : IndexStore(path: home.indexPath)
        _ = try admitDeclaredFolders(configuration.folders)
    }

    /// Binds the session port (TCP) and the gossip port (UDP) once and lets them go, so that a
    /// port in use or an address not on this host is reported — naming the address and the
    /// protocol — before the home, the key or the index exist.
    static func checkListen(_ listen: String, group: EventLoopGroup) throws {
        let (host, port) = try SessionServer.split(listen)
        do {
            try ServerBootstrap(group: group).serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port).wait().close().wait()
        } catch {
            throw StartError.listen("cannot listen for peer sessions on TCP \(listen): \(describe(error))")
        }
        do {
            try DatagramBootstrap(group: group).channelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port).wait().close().wait()
        } catch {
            throw StartError.listen("cannot listen for gossip on UDP \(listen): \(describe(error))")
        }
    }

    /// The HTTP endpoint's address, bound once and let go, like `checkListen`.
    static func checkHTTP(_ listen: String, group: EventLoopGroup) throws {
        do {
            let (host, port) = try SessionServer.split(listen)
            try ServerBootstrap(group: group).serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .bind(host: host, port: port).wait().close().wait()
        } catch {
            throw StartError.listen("cannot serve HTTP on TCP \(listen): \(describe(error))")
        }
    }

    /// "Address already in use" rather than NIO's "bind(descriptor:ptr:bytes:): … (errno: 98)".
    static func describe(_ error: Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) }
        return "\(error)"
    }

    /// The folders the configuration declares (`DaemonConfiguration.Folder`): each is checked
    /// against the index and the others first — a path shared with another secret, a secret
    /// shared at another path, nested folders — and only then are the missing ones added.
    /// Returns the records added, with their secrets.
    private func admitDeclaredFolders(_ declaredFolders: [DaemonConfiguration.Folder]) throws -> [(FolderRecord, FolderSecret)] {
        guard !declaredFolders.isEmpty else { return [] }
        var shared = try store.folders().map { SharedFolder(path: $0.path, folderID: $0.folderID, secret: $0.secret) }
        var adding: [(path: String, secret: FolderSecret)] = []
        for declared in declaredFolders {
            let secret: FolderSecret
            do { secret = try FolderSecret(parsing: declared.secret) } catch {
                throw StartError.folders("folder \(declared.path): not a folder secret (\(error))")
            }
            do {
                guard let path = try admission(of: declared.path, secret: secret, shared: shared) else { continue }
                adding.append((path, secret))
                shared.append(SharedFolder(path: path, folderID: secret.keys.folderIDString, secret: secret.text))
            } catch {
                throw StartError.folders("folder \(declared.path) from the configuration: \(error)")
            }
        }
        var added: [(FolderRecord, FolderSecret)] = []
        for (path, secret) in adding {
            try FolderPaths.prepare(path)
            let keys = secret.keys
            let record = try store.addFolder(path: path, folderID: keys.folderIDString, access: keys.access.rawValue,
                                             secret: secret.text, chunkerVersion: Int(FastCDC.version))
            logger.info("added folder \(path) from the configuration (\(keys.access.rawValue), id \(keys.folderIDString))")
            added.append((record, secret))
        }
        return added
    }

    /// A folder in the index, or about to be added to it.
    private struct SharedFolder { var path, folderID, secret: String }

    /// Whether `raw` may be shared with `secret`: its resolved path when it is to be added, nil
    /// when it is already shared with this very secret (adding it again changes nothing). Throws
    /// when the path is shared with another secret, the secret is shared at another path, or the
    /// path overlaps another folder or the home. `syncd add` and the configured folders both ask.
    private func admission(of raw: String, secret: FolderSecret, shared records: [SharedFolder]) throws -> String? {
        let path = try FolderPaths.resolve(raw)
        let keys = secret.keys
        if let same = records.first(where: { $0.path == path }) {
            guard (try? FolderSecret(parsing: same.secret))?.text == secret.text else {
                throw FolderPaths.PlacementError(description: "\(path) is already a shared folder, with another secret (folder \(same.folderID)); remove it first (syncd remove \(path))")
            }
            return nil
        }
        if let other = records.first(where: { $0.folderID == keys.folderIDString }) {
            throw FolderPaths.PlacementError(description: "this folder (id \(keys.folderIDString)) is already shared at \(other.path)")
        }
        try FolderPaths.checkPlacement(path, existing: records.map(\.path), home: configuration.home.path)
        return path
    }

    private static func rebuild(_ path: String, logger: Logger) throws -> IndexStore {
        let (store, report) = try IndexStore.rebuild(at: path) { (try? FolderSecret(parsing: $0)) != nil }
        if let kept = report.keptAs { logger.notice("index rebuilt; the old one is kept as \(kept)") }
        for folder in report.folders {
            logger.notice("re-added \(folder): its contents are unknown until peers re-sync it (nothing is deleted on peers)")
        }
        for skipped in report.skipped { logger.error("not re-added: \(skipped); add it again with: syncd add PATH --secret SECRET") }
        if let why = report.unreadable {
            logger.error("the old index's folder list cannot be read (\(why)); add each folder again with: syncd add PATH --secret SECRET")
        }
        return store
    }

    /// Runs the daemon's parts as a `ServiceGroup` until SIGTERM or SIGINT, then stops them in
    /// reverse order and releases the home. The order is the parts' dependencies: folders first
    /// (sessions deliver to them), then the session listener, gossip (its TCP fallback arrives
    /// through the listener), the dialer (it dials whom gossip finds) and the control socket last,
    /// so a request never meets a daemon half started or half stopped. SIGHUP is logged and ignored.
    public func run() async throws {
        logger.info("syncd \(SyncdVersion.string) device \(identity.deviceID) home \(configuration.home.path)")
        logger.info("AES-256-GCM through \(BulkAEAD.preferred.rawValue), the faster on this CPU (SYNCD_AEAD overrides)")
        Self.raiseOpenFileLimit()
        if !configuration.network.join.isEmpty {
            logger.info("seeds: \(configuration.network.join.joined(separator: ", "))")
        }
        let hangup = HangupService(logger: logger, reload: { [self] in reload() })
        // The hooks listen for applied batches before any folder can apply one.
        let hooks = ApplyHooks(events: events, configuration: configuration, logger: logger, after: hangup.started)
        let folders = DaemonPart("folders", after: hooks.started,
                                 start: { [self] in try startFolders() }, stop: { [self] in stopFolders() })
        let sessions = DaemonPart("sessions", after: folders.started,
                                  start: { [self] in try startSessions() }, stop: { [self] in stopSessions() })
        let gossip = DaemonPart("gossip", after: sessions.started,
                                start: { [self] in try startGossip() }, stop: { [self] in stopGossip() })
        let dialer = DaemonPart("dialer", after: gossip.started,
                                start: { [self] in startDialer() }, stop: { [self] in stopDialer() })
        let control = DaemonPart("control", after: dialer.started,
                                 start: { [self] in try startControl() }, stop: { [self] in stopControl() })
        var parts: [any Service] = [hangup, hooks, folders, sessions, gossip, dialer, control]
        var lastStarted = control.started
        if let listen = configuration.http.listen {
            let endpoint = HTTPEndpoint(listen: listen, token: configuration.http.token, events: events, logger: logger,
                                        after: control.started, status: { [weak self] in
                                            guard let self else { throw StartError.home("the daemon stopped") }
                                            return try self.status(path: nil)
                                        }, bound: { [weak self] address in self?.lock.withLock { self?.httpAddress = address } })
            parts.append(endpoint)
            lastStarted = endpoint.started
        }
        // Last, so READY=1 means every part serves (the HTTP endpoint too).
        let ready = DaemonPart("ready", after: lastStarted,
                               start: { [self] in announceReady() }, stop: { [self] in announceStopping() })
        parts.append(ready)
        let group = ServiceGroup(configuration: .init(
            services: parts.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await release()
            throw error
        }
        await release()
    }

    /// After every part stopped: the index is checkpointed, the event loops end and the home is unlocked.
    private func release() async {
        lock.withLock { () -> RepeatedTask? in defer { watchdog = nil }; return watchdog }?.cancel()
        do { try store.checkpoint() } catch { logger.warning("cannot checkpoint the index at stop: \(error)") }
        try? await self.group.shutdownGracefully()
        if lockFD >= 0 { close(lockFD); lockFD = -1 }
        logger.info("stopped")
    }

    // MARK: the parts

    private func startFolders() throws {
        for record in try store.folders() {
            do {
                let secret = try FolderSecret(parsing: record.secret)
                startService(record, secret)
            } catch {
                logger.error("folder \(record.path): stored secret unreadable (\(error)); skipping")
            }
        }
    }

    /// Every folder stops: its sessions are closed, and its apply or scan in flight is waited for
    /// until the stop timeout (`DaemonConfiguration.Lifecycle`), the same for all folders.
    private func stopFolders() {
        let stopping = lock.withLock { () -> [FolderRuntime] in defer { folders = [:] }; return Array(folders.values) }
        let deadline = DispatchTime.now() + configuration.lifecycle.stopTimeout
        stopping.forEach { $0.stop(before: deadline, reason: FolderExchange.shutdownReason, logger: logger) }
    }

    private func startSessions() throws {
        let server = SessionServer(group: group, identity: identity, logger: logger,
                                   keepalive: configuration.keepalive, features: sessionFeatures, table: sessionTable) { [weak self] in
            self?.lock.withLock { self?.exchanges } ?? [:]
        }
        let bound: String
        do { bound = try server.start(listen: configuration.network.listen) } catch {
            throw StartError.listen("cannot listen for peer sessions on TCP \(configuration.network.listen): \(Self.describe(error))")
        }
        lock.withLock { sessions = server; listenAddress = bound }
        logger.info("sessions on \(bound)")
    }

    /// Closes the listener; the sessions themselves are closed by their folders' stop.
    private func stopSessions() {
        lock.withLock { () -> SessionServer? in defer { sessions = nil }; return sessions }?.stop()
    }

    private func startGossip() throws {
        let (server, bound) = lock.withLock { (sessions, listenAddress) }
        guard let server, let bound else { throw StartError.home("gossip started before the session listener") }
        let service = try startGossip(bound: bound)
        server.gossip = service
        lock.withLock { gossip = service }
    }

    /// A graceful leave, while the sockets still work: members report this device left, not dead.
    private func stopGossip() {
        lock.withLock { () -> GossipService? in defer { gossip = nil }; return gossip }?.stop()
    }

    private func startDialer() {
        let task = group.next().scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { [weak self] _ in
            self?.dialPeers()
        }
        lock.withLock { dialer = task }
    }

    private func stopDialer() {
        lock.withLock { () -> RepeatedTask? in defer { dialer = nil }; return dialer }?.cancel()
    }

    private func startControl() throws {
        let server = ControlServer(group: group, socketPath: configuration.home.controlSocketPath, socketGroup: controlGroup,
                                   logger: logger) { [weak self] req in
            self?.handle(req) ?? .failure("daemon is shutting down")
        }
        try server.start()
        lock.withLock { control = server }
        logger.info("control socket \(configuration.home.controlSocketPath)\(configuration.control.group.map { " (group \($0) may use it)" } ?? "")")
    }

    /// Every part has started: systemd hears READY=1 (and, with `WatchdogSec=`, WATCHDOG=1 every
    /// half period from now on), and a SIGHUP reloads from now on.
    private func announceReady() {
        lock.withLock { serving = true }
        guard let notifier else { return }
        notifier.send("READY=1\nSTATUS=serving \(lock.withLock { folders.count }) folders\nMAINPID=\(getpid())")
        if let interval = notifier.watchdogInterval {
            let task = group.next().scheduleRepeatedTask(initialDelay: .zero, delay: .nanoseconds(Int64(interval.components.seconds) * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000)) { _ in
                notifier.send("WATCHDOG=1")
            }
            lock.withLock { watchdog = task }
        }
    }

    /// First to stop: systemd hears STOPPING=1 and no reload starts any more.
    private func announceStopping() {
        lock.withLock { serving = false }
        notifier?.send("STOPPING=1")
    }

    /// First to stop: requests still in flight, and any that slip in, are refused from now on.
    private func stopControl() {
        logger.info("shutting down")
        lock.withLock { () -> ControlServer? in defer { control = nil; stopping = true }; return control }?.stop()
    }

    /// A batch stages up to 1,000 files at once, each open until its chunks are in: the soft
    /// limit of open files (often 1,024) is raised to the hard one (as Syncthing and Go do).
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(resource, &limit)
    }

    private func startService(_ record: FolderRecord, _ secret: FolderSecret) {
        let me = identity.deviceID.short, folderID = secret.keys.folderID
        let placement = lock.withLock { declared }.first { Self.samePath($0.path, record.path) }?.placement ?? .init()
        let runtime = FolderRuntime(
            record: record, secret: secret, store: store, device: me, configuration: configuration,
            placement: Self.policy(placement), logger: logger,
            events: events, rtt: { [sessionTable] in sessionTable.rtt(of: $0) },
            announcedPeers: { [weak self] in
                let members = self?.lock.withLock { self?.gossip }?.members ?? []
                return Set(members.filter { m in
                    m.status == .alive && m.name != me
                        && (MemberMeta(decoding: m.meta)?.folders.contains { $0.folderID == folderID } ?? false)
                }.map(\.name))
            })
        lock.withLock { folders[record.path] = runtime }
        runtime.start()
    }

    /// A declared path and a folder's path name the same folder (the record's path is resolved).
    static func samePath(_ declared: String, _ path: String) -> Bool {
        FolderPaths.normalize(declared) == path || (try? FolderPaths.resolve(declared)) == path
    }

    /// A folder's declared `Placement` with names turned into numbers (validated at start).
    static func policy(_ p: DaemonConfiguration.Placement) -> PlacementPolicy {
        let uid: uid_t? = p.owner.flatMap { DaemonConfiguration.userID($0) }
        let gid: gid_t? = p.group.flatMap { DaemonConfiguration.groupID($0) }
        return PlacementPolicy(uid: uid.map { UInt32($0) }, gid: gid.map { UInt32($0) },
                               fileMode: p.fileMode, directoryMode: p.directoryMode)
    }

    // MARK: reload (SIGHUP)

    /// Reads the configuration again and applies what can change while running: the declared
    /// folders — one no longer declared is stopped and removed as by `syncd remove` (its files
    /// stay), a new one is added and started, one whose owner or modes changed is restarted with
    /// them — and the log level (the reloader sets it). Anything else that changed is named in a
    /// warning and takes effect at the next start. A configuration that cannot be read or
    /// admitted changes nothing. The daemon keeps its pid, sessions and the other folders.
    public func reload() {
        guard let reloader else {
            logger.notice("reload: no configuration file or environment to reload from")
            return
        }
        guard lock.withLock({ serving && !stopping }) else {
            logger.notice("reload: the daemon is starting or stopping; ignored")
            return
        }
        notifier?.send(ServiceNotifier.reloading())
        defer { notifier?.send("READY=1\nSTATUS=serving \(lock.withLock { folders.count }) folders") }
        let new: DaemonConfiguration
        do { new = try reloader() } catch {
            logger.error("reload: \(error); the configuration in use is kept")
            return
        }
        let old = lock.withLock { declared }
        var unchangedRest = new
        unchangedRest.folders = configuration.folders
        if unchangedRest != configuration {
            logger.warning("reload: only folders and log_level change while running; restart the daemon for the other settings that changed")
        }
        // No longer declared: stopped and removed (files left in place).
        for gone in old where !new.folders.contains(where: { FolderPaths.normalize($0.path) == FolderPaths.normalize(gone.path) }) {
            let path = (try? FolderPaths.resolve(gone.path)) ?? FolderPaths.normalize(gone.path)
            do {
                _ = try remove(ControlRequest(command: .remove, path: path))
                logger.notice("reload: folder \(path) is no longer declared: stopped and removed (its files are left in place)")
            } catch {
                logger.error("reload: cannot remove folder \(path): \(error)")
            }
        }
        lock.withLock { declared = new.folders }
        // Declared before and now with other owners or modes: restarted with them.
        for folder in new.folders {
            guard let before = old.first(where: { FolderPaths.normalize($0.path) == FolderPaths.normalize(folder.path) }),
                  before.placement != folder.placement else { continue }
            let runtime: FolderRuntime? = lock.withLock {
                folders.first { Self.samePath(folder.path, $0.key) }.flatMap { folders.removeValue(forKey: $0.key) }
            }
            guard let runtime else { continue }
            runtime.stop(before: .now() + configuration.lifecycle.stopTimeout, reason: "the folder restarts with a new configuration", logger: logger)
            do {
                let record = try store.folders().first { $0.id == runtime.record.id } ?? runtime.record
                startService(record, try FolderSecret(parsing: record.secret))
                logger.notice("reload: folder \(runtime.record.path) restarted with its new owner and modes")
            } catch {
                logger.error("reload: folder \(runtime.record.path): \(error)")
            }
        }
        // New: added and started.
        do {
            let added = try admitDeclaredFolders(new.folders)
            for (record, secret) in added { startService(record, secret) }
            if !added.isEmpty { lock.withLock { gossip }?.metaChanged() }
        } catch {
            logger.error("reload: \(error)")
        }
        logger.notice("reload: done; \(lock.withLock { folders.count }) folders")
    }

    // MARK: gossip

    /// Membership on the same port as sessions (UDP), announcing this device and its folders.
    private func startGossip(bound: String) throws -> GossipService {
        guard let local = Endpoint(bound) else { throw StartError.home("cannot parse bound address \(bound)") }
        var advertised = local
        if let text = configuration.network.advertise {
            guard let e = Endpoint(text) else { throw StartError.home("--advertise \(text) is not HOST:PORT") }
            advertised = e
        } else if local.host == "0.0.0.0" || local.host == "::" {
            let (host, why) = Self.chooseAdvertisedHost(routeSource: Self.defaultRouteSource(), interfaces: Self.interfaceIPv4s())
            advertised = Endpoint(host: host, port: local.port)
            logger.log(level: host.hasPrefix("127.") ? .warning : .notice,
                       "listening on \(local), announced to other members as \(advertised): \(why); --advertise HOST:PORT announces another address")
        }
        let cipher: GossipCipher
        do { cipher = try GossipCipher(keyText: configuration.network.gossipKey) } catch { throw StartError.home("\(error)") }
        let deviceBytes = identity.deviceID.bytes
        let store = self.store
        let service = GossipService(
            group: group, settings: configuration.gossip, name: identity.deviceID.short, endpoint: advertised,
            cipher: cipher, snapshotPath: configuration.home.path + "/members.json", beaconPort: configuration.network.beaconPort,
            logger: logger,
            metaSource: { [weak self] in
                let services = self?.lock.withLock { self?.folders.values.map(\.service) } ?? []
                let folders = services.sorted { $0.record.id < $1.record.id }.map { s in
                    MemberMeta.Folder(folderID: s.keys.folderID, sequence: UInt64(max(0, (try? store.sequence(folder: s.record.id)) ?? 0)))
                }
                return MemberMeta(device: deviceBytes, folders: folders).encoded
            })
        service.onMemberAlive = { [weak self] member in self?.memberCameAlive(member) }
        let seeds = configuration.network.join.compactMap(Endpoint.init)
        do { try service.start(host: local.host, port: Int(local.port), seeds: seeds) } catch {
            throw StartError.listen("cannot listen for gossip on UDP \(local): \(Self.describe(error))")
        }
        logger.info("gossip on \(local) (announced as \(advertised))\(cipher.key == nil ? "" : ", cluster key on")")
        return service
    }

    /// The smoothed round-trip time of the sessions with `device` (the largest if several folders
    /// are shared with it), measured by the keepalive's ping and pong; nil before the first pong
    /// and when no session with `device` is open. Thread-safe.
    public func rtt(of device: ShortDeviceID) -> Duration? { sessionTable.rtt(of: device) }

    /// Gossip found `member` alive after losing it (or it restarted): sessions with it that went
    /// quiet meanwhile are closed, and the dialer reconnects at once — not after the keepalive
    /// timeout, nor after TCP's retransmission backoff.
    private func memberCameAlive(_ member: MemberState) {
        guard member.name != identity.deviceID.short else { return }
        let sessions = sessionTable.sessionCount(with: member.name)
        if sessions > 0 {
            sessionTable.closeQuiet(device: member.name, longerThan: configuration.keepalive.interval,
                                    reason: "gossip lost and found member \(member.name.deviceName)")
        }
        dialPeers()
    }

    /// What our sessions offer in the handshake (Protocol/handshake.md, "Features").
    var sessionFeatures: SessionMachine.Features { configuration.network.compression ? .deflate : [] }

    /// Opens a session to every member that gossip says holds one of our folders and that we are
    /// not connected to yet. The device with the smaller id dials, so a pair has one session.
    /// A session that went silent is closed by its keepalive (`SessionLiveness`), which detaches it,
    /// so the next round (≤ 100 ms) redials it.
    private func dialPeers() {
        guard let gossip = lock.withLock({ gossip }) else { return }
        let me = identity.deviceID.short
        let members = gossip.members.filter { $0.status != .left && $0.name != me && me < $0.name }
        let current = lock.withLock { Array(exchanges.values) }
        let now = DispatchTime.now()
        for m in members {
            guard let meta = MemberMeta(decoding: m.meta) else { continue }
            for exchange in current where meta.folders.contains(where: { $0.folderID == exchange.folderID })
                && !exchange.isConnected(m.name) {
                let key = [m.name, exchange.record.id < 0 ? 0 : UInt64(exchange.record.id)]
                let due: Bool = lock.withLock {
                    guard m.status != .alive else { return true }
                    // After a partition heals, data moves once a session is up, not once gossip
                    // has confirmed the member alive again (which takes up to its reconnect round).
                    if let last = lastUnconfirmedDial[key], now < last + Self.unconfirmedDialInterval { return false }
                    lastUnconfirmedDial[key] = now
                    return true
                }
                guard due, lock.withLock({ dialing.insert(key).inserted }) else { continue }
                let logger = self.logger, keepalive = configuration.keepalive, table = sessionTable, identity = self.identity
                let features = sessionFeatures
                ClientBootstrap(group: group)
                    .connectTimeout(.seconds(3))
                    // An IPPROTO_TCP option: `socketOption(.tcp_nodelay)` would set SOL_SOCKET's
                    // option 1, SO_DEBUG, which needs CAP_NET_ADMIN and closes every session.
                    .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            let machine = SessionMachine(initiatorFor: exchange.folderID, psk: exchange.sessionPSK, staticKey: identity.privateKey,
                                                         features: features)
                            try channel.pipeline.syncOperations.addHandler(
                                SessionHandler(machine: machine, exchanges: [exchange.folderID: exchange], logger: logger,
                                               keepalive: keepalive, table: table, dials: true))
                        }
                    }
                    .connect(host: m.endpoint.host, port: Int(m.endpoint.port))
                    .whenComplete { [weak self] result in
                        switch result {
                        case .success(let channel):
                            channel.closeFuture.whenComplete { [weak self] _ in _ = self?.lock.withLock { self?.dialing.remove(key) } }
                        case .failure(let error):
                            logger.debug("cannot reach \(m.endpoint): \(error)")
                            _ = self?.lock.withLock { self?.dialing.remove(key) }
                        }
                    }
            }
        }
    }

    /// The address to announce when listening on a wildcard, and why it was chosen: the source
    /// address of the default route (what peers elsewhere see this host as), else the first
    /// non-loopback, non-link-local IPv4 address of an interface, else loopback (then only
    /// members on this host can reach it).
    static func chooseAdvertisedHost(routeSource: String?, interfaces: [(name: String, ip: String)]) -> (String, String) {
        if let source = routeSource, !source.hasPrefix("127."), source != "0.0.0.0" {
            let name = interfaces.first { $0.ip == source }?.name
            return (source, "the address of \(name.map { "interface \($0)" } ?? "this host") that carries the default route")
        }
        let usable = interfaces.filter { !$0.ip.hasPrefix("127.") && !$0.ip.hasPrefix("169.254.") }
        if let first = usable.first {
            return (first.ip, "no default route; the first IPv4 address of interface \(first.name)")
        }
        return ("127.0.0.1", "no network interface with an IPv4 address besides loopback: only members on this host can reach it")
    }

    /// The local address the kernel picks to reach addresses outside this host (a UDP socket
    /// connected to a documentation address: nothing is sent), nil without a default route.
    static func defaultRouteSource() -> String? {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = in_port_t(9).bigEndian
        inet_pton(AF_INET, "192.0.2.1", &remote.sin_addr)   // TEST-NET-1: routed like any outside address
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &local.sin_addr, &text, socklen_t(text.count)) != nil else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Every interface's IPv4 address, in the system's order.
    static func interfaceIPv4s() -> [(name: String, ip: String)] {
        guard let devices = try? System.enumerateDevices() else { return [] }
        return devices.compactMap { device in
            guard let address = device.address, case .v4 = address, let ip = address.ipAddress else { return nil }
            return (device.name, ip)
        }
    }

    private func peers() -> PeersReport {
        let members = lock.withLock { gossip }?.members ?? []
        let me = identity.deviceID.short
        return PeersReport(members: members.map { m in
            let meta = MemberMeta(decoding: m.meta)
            return PeersReport.Member(
                device: meta.flatMap { DeviceID(bytes: $0.device)?.description } ?? String(m.name, radix: 16),
                address: m.endpoint.description, status: m.status.name, incarnation: m.incarnation,
                folders: (meta?.folders ?? []).map { .init(folderId: Base32.encode($0.folderID), sequence: $0.sequence) },
                local: m.name == me ? true : nil)
        })
    }

    // MARK: control requests

    func handle(_ request: ControlRequest) -> ControlResponse {
        if lock.withLock({ stopping }) { return .failure("daemon is shutting down") }
        do {
            switch request.command {
            case .status: return ControlResponse(ok: true, status: try status(path: request.path))
            case .id: return ControlResponse(ok: true, device: identity.deviceID.description)
            case .peers: return ControlResponse(ok: true, peers: peers())
            case .add: return try add(request)
            case .remove: return try remove(request)
            case .flush:
                // `syncd wait`: writes that completed before it started are scanned first.
                guard let path = request.path, let service = lock.withLock({ folders[FolderPaths.normalize(path)]?.service }) else {
                    throw StoreError.noSuchFolder(request.path ?? "")
                }
                return service.flushPendingChanges() ? ControlResponse(ok: true) : .failure("the folder's watcher did not answer")
            case .acceptDeletions: return try acceptDeletions(request)
            case .benchPeer: return try benchPeer(request)
            }
        } catch {
            return .failure("\(error)")
        }
    }

    /// What `status` reports (the CLI, `/api/status`, `/metrics` and the status page all read
    /// this one report). Thread-safe.
    func status(path: String?) throws -> StatusReport {
        let runtimes = lock.withLock { folders.values.sorted { $0.record.path < $1.record.path } }
        let members = lock.withLock({ gossip })?.members ?? []
        let me = identity.deviceID.short
        let uptime = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
        var list: [StatusReport.Folder] = []
        for runtime in runtimes where path == nil || runtime.record.path == FolderPaths.normalize(path!) {
            let s = runtime.service
            let stats = try store.stats(folder: s.record.id)
            let state = s.currentState
            var error: String?
            if case .error(let e) = state { error = e }
            if case .unknown(let why) = state { error = why }
            var folder = StatusReport.Folder(
                path: s.record.path, folderId: s.record.folderID, access: s.record.access, state: state.name,
                error: error, localFiles: stats.files + stats.symlinks, localDirectories: stats.directories,
                localSymlinks: stats.symlinks, localBytes: stats.bytes, sequence: stats.sequence, watching: s.isWatching,
                remoteManifests: try store.remoteManifestCount(folder: s.record.id))
            let tally = runtime.events.tally
            folder.applies = tally.applies
            folder.errors = tally.errors
            folder.reachedPeer = !tally.lastSeen.isEmpty
            if let exchange = runtime.exchange {
                let (counters, pullError, connected) = exchange.snapshot
                let view = exchange.syncView
                folder.needFiles = counters.needFiles + view.queuedFiles
                folder.needBytes = counters.needBytes + view.queuedBytes
                folder.conflicts = counters.conflicts
                folder.bytesIn = counters.bytesIn
                folder.bytesOut = counters.bytesOut
                folder.busy = s.isBusy || counters.needFiles > 0
                folder.pullError = pullError
                let sample = FolderProgress.Sample(
                    pendingFiles: folder.needFiles ?? 0, pendingBytes: folder.needBytes ?? 0, doneFiles: counters.doneFiles,
                    doneBytes: counters.doneBytes, bytesIn: counters.chunkBytesIn, applyingBytes: counters.needBytes)
                let sequence = UInt64(max(stats.sequence, 0))
                var peers = try connected.map { p in
                    StatusReport.Folder.Peer(device: p.device, connected: true, sequence: p.acked,
                                             needBytes: try store.bytesAfter(folder: s.record.id, sequence: Int64(p.acked)),
                                             applied: p.applied, announced: p.announced, digest: p.digest)
                }
                // Members that announce the folder but have no session count too: alive ones not
                // connected yet, and those gossip calls suspect or dead, with when they were last seen.
                for m in members where m.name != me {
                    guard let meta = MemberMeta(decoding: m.meta), meta.folders.contains(where: { $0.folderID == s.keys.folderID }),
                          let device = DeviceID(bytes: meta.device)?.description else { continue }
                    if let i = peers.firstIndex(where: { $0.device == device }) {
                        peers[i].gossip = m.status.name
                    } else if m.status != .left {
                        var peer = StatusReport.Folder.Peer(device: device, connected: false, sequence: 0, needBytes: 0)
                        peer.gossip = m.status.name
                        peers.append(peer)
                    }
                }
                let (progress, lags) = memory.withLock { memory -> (StatusReport.Folder.Progress?, [Double]) in
                    var m = memory[s.record.path] ?? FolderMemory()
                    defer { memory[s.record.path] = m }
                    let progress = m.progress.observe(sample, now: uptime)
                    let lags = peers.map { p in
                        let send = p.connected ? sequence.subtractingClamped(p.sequence) : 0
                        let receive = p.connected ? (p.announced ?? 0).subtractingClamped(p.applied ?? 0) : 0
                        return m.lag.observe(p.device, behind: send > 0 || receive > 0, now: uptime)
                    }
                    return (progress, lags)
                }
                for i in peers.indices {
                    let p = peers[i]
                    let id = try? DeviceID(parsing: p.device)
                    peers[i].name = id?.name ?? String(p.device.prefix(7))
                    peers[i].lastSeen = tally.lastSeen[p.device].map { ($0 * 1000).rounded() / 1000 }
                    guard p.connected else { continue }
                    peers[i].sendLag = sequence.subtractingClamped(p.sequence)
                    peers[i].receiveLag = (p.announced ?? 0).subtractingClamped(p.applied ?? 0)
                    peers[i].lagSeconds = lags[i]
                    if let id, let rtt = sessionTable.rtt(of: id.short) {
                        let ms = Double(rtt.components.seconds) * 1e3 + Double(rtt.components.attoseconds) / 1e15
                        peers[i].rttMs = (ms * 1000).rounded() / 1000
                    }
                }
                folder.peers = peers.sorted { $0.device < $1.device }
                folder.progress = progress
                folder.state = FolderStateRule.state(scanner: state.name, pending: progress != nil || view.applying,
                                                     connectedPeers: view.connected, inSync: view.inSync)
            }
            list.append(folder)
        }
        if let p = path, list.isEmpty { throw StoreError.noSuchFolder(p) }
        var report = StatusReport(device: identity.deviceID.description, version: SyncdVersion.string,
                                  listen: lock.withLock { listenAddress }, folders: list)
        report.http = lock.withLock { httpAddress }
        if !members.isEmpty { report.members = Dictionary(grouping: members, by: { $0.status.name }).mapValues(\.count) }
        return report
    }

    private func add(_ request: ControlRequest) throws -> ControlResponse {
        guard let raw = request.path else { return .failure("add needs a path") }
        // Everything is validated before anything is created.
        let secret: FolderSecret
        if let text = request.secret {
            secret = try FolderSecret(parsing: text)
        } else if request.generate == true {
            secret = FolderSecret.generate()
        } else {
            return .failure("add needs --secret (new) or --secret SECRET (join)")
        }
        let keys = secret.keys
        let shared = try store.folders().map { SharedFolder(path: $0.path, folderID: $0.folderID, secret: $0.secret) }
        guard let path = try admission(of: raw, secret: secret, shared: shared) else {
            // The same path with the same secret: already done (a script or a config may say it twice).
            return ControlResponse(ok: true, folderId: keys.folderIDString, alreadyShared: true)
        }
        try FolderPaths.prepare(path)
        let record = try store.addFolder(path: path, folderID: keys.folderIDString, access: keys.access.rawValue,
                                         secret: secret.text, chunkerVersion: Int(FastCDC.version))
        logger.info("added folder \(path) (\(keys.access.rawValue), id \(keys.folderIDString))")
        startService(record, secret)
        lock.withLock { gossip }?.metaChanged()
        return ControlResponse(ok: true, secret: request.secret == nil ? secret.text : nil, folderId: keys.folderIDString)
    }

    /// `syncd bench peer`: the folder and the peer named (PeerBench's choices), then a
    /// measurement over their session; blocks this control request until it ends.
    private func benchPeer(_ request: ControlRequest) throws -> ControlResponse {
        let bytes = request.bytes ?? Int64(PeerBench.defaultBytes)
        guard (1...Int64(PeerBench.maxBytes)).contains(bytes) else { throw PeerBench.Failure("bench size \(bytes): from 1 byte to \(PeerBench.maxBytes >> 20) MiB") }
        let runtimes = lock.withLock { folders }
        let path = try PeerBench.chooseFolder(request.path.map(FolderPaths.normalize), shared: runtimes.keys.sorted())
        guard let exchange = runtimes[path]?.exchange else { throw PeerBench.Failure("folder \(path) serves no sessions (see syncd status)") }
        let members = lock.withLock { gossip }?.members ?? []
        let gossipDevices = members.compactMap { m in MemberMeta(decoding: m.meta).flatMap { DeviceID(bytes: $0.device) } }
        let device = try PeerBench.choosePeer(request.peer ?? "", known: gossipDevices + exchange.connectedDevices, me: identity.deviceID)
        let settings = PeerBenchRun.Settings(bytes: Int(bytes))
        let result = try exchange.runBench(with: device, settings: settings, gossip: members.first { $0.name == device.short }?.status.name)
        let rtt = Double(result.rtt.components.seconds) * 1e3 + Double(result.rtt.components.attoseconds) / 1e15
        logger.info("bench with \(device.name) in \(path): \(result.bytes) bytes in \(result.seconds) s")
        return ControlResponse(ok: true, bench: PeerBenchReport(
            peer: device.description, folder: path, bytes: result.bytes, seconds: result.seconds, mbPerSecond: result.mbPerSecond,
            rttMilliseconds: rtt, requestBytes: settings.requestBytes, window: settings.window))
    }

    /// `syncd accept-deletions PATH`: what is missing from PATH is deleted on purpose.
    private func acceptDeletions(_ request: ControlRequest) throws -> ControlResponse {
        let path = FolderPaths.normalize(request.path ?? "")
        guard let service = lock.withLock({ folders[path]?.service }) else { throw StoreError.noSuchFolder(path) }
        return ControlResponse(ok: true, folderId: service.record.folderID, deletions: try service.acceptDeletions())
    }

    /// `syncd remove PATH`: everything of the folder stops — no session is accepted or dialled for
    /// it any more, gossip stops announcing it, its open sessions are closed and its anti-entropy
    /// timer stopped, its scans and watcher end — and only then is it dropped from the index.
    private func remove(_ request: ControlRequest) throws -> ControlResponse {
        guard let raw = request.path else { return .failure("remove needs a path") }
        let path = FolderPaths.normalize(raw)
        let removed: FolderRuntime? = lock.withLock {
            guard let runtime = folders.removeValue(forKey: path) else { return nil }
            lastUnconfirmedDial = lastUnconfirmedDial.filter { $0.key.last != UInt64(max(0, runtime.record.id)) }
            return runtime
        }
        guard let removed else { throw StoreError.noSuchFolder(path) }
        let service = removed.service
        lock.withLock { gossip }?.metaChanged()
        removed.stop(before: .now() + configuration.lifecycle.stopTimeout, reason: FolderExchange.removedReason, logger: logger)
        try store.removeFolder(id: service.record.id)
        logger.info("removed folder \(path) (files left in place)")
        return ControlResponse(ok: true, folderId: service.record.folderID)
    }
}

extension UInt64 {
    /// `self - other`, or 0 when `other` is larger.
    func subtractingClamped(_ other: UInt64) -> UInt64 { self > other ? self - other : 0 }
}
