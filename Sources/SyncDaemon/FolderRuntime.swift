import Dispatch
import Logging
import SyncCore
import SyncFS
import SyncSecurity
import SyncStore

/// One shared folder at run time, and the one owner of its two halves: the scanner side
/// (`FolderService`: watcher, scans, the index writes of local changes) and the replication side
/// (`FolderExchange`: the folder model, its sessions, applies). The halves never hold each other;
/// what one needs of the other is wired here as closures, and `stop` ends both, in order.
final class FolderRuntime: Sendable {
    let service: FolderService
    /// nil when the folder cannot serve sessions (its keys or index id are unreadable): it still scans.
    let exchange: FolderExchange?
    /// What both halves tell (`DaemonEvents`), and what `status` remembers of it.
    let events: FolderEvents

    var record: FolderRecord { service.record }
    var folderID: [UInt8] { service.keys.folderID }

    /// `rtt`: the sessions' round-trip time to a device; `events`: where both halves tell what
    /// happens (nil: nowhere).
    init(record: FolderRecord, secret: FolderSecret, store: IndexStore, device: ShortDeviceID,
         configuration: DaemonConfiguration, placement: PlacementPolicy = .none, logger: Logger, events: DaemonEvents? = nil,
         rtt: @escaping @Sendable (ShortDeviceID) -> Duration?,
         announcedPeers: @escaping @Sendable () -> Set<ShortDeviceID> = { [] }) {
        let service = FolderService(record: record, secret: secret, store: store, device: device,
                                    configuration: configuration, logger: logger)
        self.service = service
        let told = FolderEvents(folder: record.path, sink: events)
        self.events = told
        service.events = told
        let exchange: FolderExchange?
        do {
            exchange = try FolderExchange(record: record, keys: service.keys, store: store, device: device, logger: logger,
                                          replication: configuration.replication, placement: placement)
        } catch {
            logger.error("folder \(record.path): cannot serve sessions (\(error))")
            exchange = nil
        }
        self.exchange = exchange
        guard let exchange else {
            service.onIndexChanged = { paths in told.localChangeIndexed(paths) }
            return
        }
        exchange.events = told
        exchange.applier.events = told
        exchange.rtt = rtt
        exchange.announcedPeers = announcedPeers
        // What an apply needs of the scanner side.
        exchange.applier.scanner = FolderApplier.Scanner(
            isPaused: { [weak service] in service?.isPaused ?? true },
            isBusy: { [weak service] in service?.isBusy ?? true },
            deletionsAccepted: { [weak service] in service?.deletionsAccepted ?? false },
            pauseForFullDisk: { [weak service] needed in service?.pauseForFullDisk(needed: needed) },
            exclusive: { [weak service] body in
                guard let service else { throw PullError(description: "the folder is stopping") }
                try service.exclusive(body)
            })
        // What the scanner side needs of the replication side.
        service.onIndexChanged = { [weak exchange] paths in
            exchange?.indexMoved(localChanges: paths)
            told.localChangeIndexed(paths)
        }
        service.restore = { [weak exchange] entries, done in
            guard let exchange else { return done([]) }
            exchange.restore(entries, done: done)
        }
    }

    func start() { service.start() }

    /// Stops the folder: its exchange first (sessions closed, the apply in flight finished), then
    /// its scans; each waits no later than `deadline`, so stopping never hangs.
    func stop(before deadline: DispatchTime, reason: String, logger: Logger) {
        if let exchange, !exchange.stop(waitingUntil: deadline, reason: reason) {
            logger.warning("folder \(record.path): an apply was still running when the stop timeout passed")
        }
        if !service.stop(waitingUntil: deadline) {
            logger.warning("folder \(record.path): a scan was still running when the stop timeout passed")
        }
    }
}
