import Dispatch
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncSecurity
import SyncStore

/// Keeps one folder's index current: a full scan at start, then inotify batches scanned
/// incrementally, plus a jittered periodic full rescan as a safety net. Scans run one at a time
/// on the folder's own queue; events that arrive meanwhile are merged into the next scan.
final class FolderService: @unchecked Sendable {
    enum State: Equatable {
        case scanning, idle
        case error(String)
        /// Running, but what the folder holds is not known to match its index (its marker was
        /// missing, most of its files vanished at once, its index was rebuilt): paths found missing
        /// are set aside and pulled back from peers, never recorded as deleted.
        case unknown(String)

        var name: String {
            switch self {
            case .scanning: return "scanning"
            case .idle: return "idle"
            case .error: return "error"
            case .unknown: return "unknown"
            }
        }
    }

    let record: FolderRecord
    let keys: FolderKeys
    let store: IndexStore
    let device: ShortDeviceID
    let logger: Logger
    private let configuration: DaemonConfiguration
    let fs: POSIXFileSystem
    let scanner: FolderScanner?
    private var watcher: InotifyWatcher?
    private var timer: DispatchSourceTimer?
    let queue: DispatchQueue
    private let writeQueue: DispatchQueue

    let lock = Lock()
    private var state: State = .idle
    private var pending = WatchBatch()
    private var scanQueued = false
    var stopped = false
    private var ignore = IgnoreRules.empty   // reloaded at the start of every scan
    /// The folder's contents are unknown (mirrors the store's flag; FolderService+Unknown.swift).
    var contentsUnknown = false
    var unknownReason = "set before the daemon started"
    /// Entries set aside (the store's `missing_file`), as last counted.
    var missingCount = 0
    /// Paused because the folder's root or its `.syncd` marker is missing: polled every second.
    var pausedForMarker = false
    /// Until then (uptime ns), scans record missing paths as deleted whatever their number: the
    /// user confirmed with `syncd accept-deletions`.
    var deletionsAcceptedUntil: UInt64 = 0
    var restoring = false
    /// Set-aside paths no peer could serve, and when (uptime ns) to ask again.
    var unavailable: [String: UInt64] = [:]
    var recoveryTimer: DispatchSourceTimer?
    /// Pulls set-aside entries back from the peers; `done` gets the paths none could serve
    /// (wired by `FolderRuntime` to `FolderExchange.restore`).
    var restore: (@Sendable (_ entries: [FileEntry], _ done: @escaping @Sendable ([String]) -> Void) -> Void)?
    /// Called after every committed batch of local changes, with their paths (the push path to
    /// peers; a local change supersedes a peer's change of the path that failed to apply).
    var onIndexChanged: (@Sendable (_ paths: [String]) -> Void)?
    /// Where scans and pauses are told (`DaemonEvents`); set by `FolderRuntime`.
    var events = FolderEvents.none

    init(record: FolderRecord, secret: FolderSecret, store: IndexStore, device: ShortDeviceID,
         configuration: DaemonConfiguration, logger: Logger) {
        self.record = record
        self.keys = secret.keys
        self.store = store
        self.device = device
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "folder"] = "\(record.path)"
        self.logger = logger
        self.fs = POSIXFileSystem(root: record.path)
        self.queue = DispatchQueue(label: "syncd.folder.\(record.id)")
        self.writeQueue = DispatchQueue(label: "syncd.folder.\(record.id).index")
        // Storage peers hold sealed data only: there is no plaintext folder to index.
        if let gear = keys.chunkerGear, let idKey = keys.chunkIDKey {
            scanner = FolderScanner(fs: fs, hasher: FileHasher(chunker: FastCDC(gear: gear), ids: ChunkHasher(key: idKey)))
        } else {
            scanner = nil
        }
        contentsUnknown = scanner != nil && ((try? store.contentsUnknown(folder: record.id)) ?? false)
        missingCount = (try? store.missingCount(folder: record.id)) ?? 0
    }

    var currentState: State {
        lock.withLock {
            if case .error = state { return state }
            return contentsUnknown ? .unknown(unknownMessage) : state
        }
    }

    /// Runs `body` on the folder's queue, between scans: applying files from peers this way means
    /// no scan ever sees a half-applied batch or mistakes an applied file for a local edit.
    func exclusive<T>(_ body: () throws -> T) rethrows -> T { try queue.sync(execute: body) }

    /// The folder is paused (root gone, disk full): nothing is applied.
    var isPaused: Bool { if case .error = currentState { return true } else { return false } }

    /// Pauses the folder because its disk is full, and resumes by itself once `needed` bytes are
    /// free again (checked every 5 s): nothing is pulled or applied meanwhile.
    func pauseForFullDisk(needed: Int64) {
        let reason = "disk full: \(needed) bytes needed in \(record.path); paused until space returns"
        let wasPaused: Bool = lock.withLock {
            if case .error = state { return true }
            state = .error(reason)
            return false
        }
        guard !wasPaused else { return }
        logger.error("\(reason)")
        events.error(reason)
        @Sendable func check() {
            DispatchQueue.global().asyncAfter(deadline: .now() + 5) { [weak self] in
                guard let self else { return }
                var fs = statvfs()
                if statvfs(self.record.path, &fs) == 0, Int64(fs.f_bavail) * Int64(fs.f_frsize) > needed {
                    self.lock.withLock { if case .error(let r) = self.state, r == reason { self.state = .idle } }
                    self.logger.notice("disk space is back; resuming")
                } else {
                    check()
                }
            }
        }
        check()
    }
    /// Scans queued or running, or contents unknown (`syncd wait` must not pass meanwhile).
    var isBusy: Bool { lock.withLock { scanQueued || !pending.isEmpty || contentsUnknown } }

    var isWatching: Bool { lock.withLock { watcher != nil } && !(watcher?.isDegraded ?? true) }

    func start() {
        guard scanner != nil else { return }
        let rules = Self.loadIgnore(fs)
        lock.withLock { ignore = rules }
        startWatcher()
        enqueue(WatchBatch(rescanAll: true))
        scheduleRescan()
        startRecovery()
    }

    /// Stops watching and scanning, and waits until `deadline` for the scan in progress (it stops
    /// at its next batch boundary) or an apply placing files (`exclusive`). False when one was
    /// still running at `deadline`.
    @discardableResult
    func stop(waitingUntil deadline: DispatchTime) -> Bool {
        lock.withLock { stopped = true }
        timer?.cancel()
        recoveryTimer?.cancel()
        watcher?.stop()
        let idle = DispatchSemaphore(value: 0)
        queue.async { idle.signal() }
        return idle.wait(timeout: deadline) == .success
    }

    func startWatcher() {
        let w = InotifyWatcher(root: record.path, logger: logger,
                               isIgnoredDirectory: { [weak self] path in
                                   self?.lock.withLock { self?.ignore.isIgnored(path, isDirectory: true) } ?? false
                               },
                               handler: { [weak self] batch in self?.enqueue(batch) })
        do {
            try w.start()
            lock.withLock { watcher = w }
        } catch {
            logger.warning("cannot watch the folder (\(error)); relying on periodic rescans")
        }
    }

    /// Merges `batch` into the pending work and makes sure a scan will run.
    func enqueue(_ batch: WatchBatch) {
        let run: Bool = lock.withLock {
            if stopped { return false }
            pending.paths.formUnion(batch.paths)
            pending.rescanAll = pending.rescanAll || batch.rescanAll || batch.paths.contains(".syncignore")
            if scanQueued { return false }
            scanQueued = true
            return true
        }
        if run { queue.async { self.drain() } }
    }

    private func drain() {
        while true {
            let work: WatchBatch? = lock.withLock {
                if pending.isEmpty || stopped { scanQueued = false; return nil }
                defer { pending = WatchBatch() }
                return pending
            }
            guard let work else { return }
            scan(work)
        }
    }

    private func scan(_ work: WatchBatch) {
        guard let scanner else { return }
        let started = DispatchTime.now().uptimeNanoseconds
        // The folder marker: a root without its `.syncd/` (or no root at all) is an unmounted
        // volume or a wiped directory, not a wish to delete everything on every peer (Syncthing's
        // .stfolder rule). It pauses the folder, and its contents are unknown from then on.
        let markerPresent = FileManager.default.fileExists(atPath: record.path + "/.syncd")
        var work = work
        let (wasError, resuming): (Bool, Bool) = lock.withLock {
            let e = { if case .error = state { return true } else { return false } }()
            let resuming = pausedForMarker && markerPresent
            if resuming { work.rescanAll = true }   // whatever woke us, resuming is a full scan
            if work.rescanAll { state = .scanning }
            return (e, resuming)
        }
        let rules = Self.loadIgnore(fs)
        lock.withLock { ignore = rules }
        do {
            if !markerPresent {
                throw ScanError.rootUnavailable("its marker \(record.path)/.syncd is missing (unmounted or emptied?); "
                    + "recreate the directory to resume")
            }
            if resuming {
                // Watch again before walking, so what is written from now on is seen.
                logger.notice("folder root is back; resuming (contents unknown: nothing missing is recorded as deleted)")
                watcher?.stop()
                lock.withLock { watcher = nil; pausedForMarker = false }
                startWatcher()
            }
            let baseline: any ScanBaseline
            // Many paths (a directory moved in, a batch applied from a peer): one snapshot query
            // beats a query per path.
            if work.rescanAll || work.paths.count > 64 {
                baseline = SnapshotBaseline(try store.scanSnapshot(folder: record.id).mapValues {
                    IndexedState(metadata: $0.metadata, deleted: $0.deleted)
                })
            } else {
                baseline = StoreBaseline(store: store, folder: record.id)
            }
            // Index writes overlap the walk and hashing: one core commits batch N to SQLite while
            // the other hashes batch N+1. At most two batches wait, so memory stays bounded.
            let notify = onIndexChanged
            let writes = BatchWriter(queue: writeQueue) { [store, record, device] batch in
                try store.recordLocalChanges(batch, folder: record.id, device: device)
                notify?(batch.map(\.path))
            }
            let report: ScanReport
            do {
                report = try scanner.scan(roots: work.rescanAll ? [""] : Array(work.paths), baseline: baseline,
                                          ignore: rules, missing: missingPolicy(),
                                          isCancelled: { [unowned self] in lock.withLock { stopped } },
                                          emit: writes.submit)
            } catch {
                try? writes.finish()
                throw error
            }
            try writes.finish()
            if !report.setAside.isEmpty { try setAside(report) }
            settleUnknown()
            for e in report.errors { logger.warning("scan: \(e)") }
            if !report.unstable.isEmpty {
                logger.debug("files still changing, will rescan: \(report.unstable.prefix(5))")
                queue.asyncAfter(deadline: .now() + 1) { [weak self] in
                    self?.enqueue(WatchBatch(paths: Set(report.unstable)))
                }
            }
            let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
            events.scanned(seconds: ms / 1000)
            if work.rescanAll || report.changes > 0 {
                logger.info("scan: \(report.changes) changes, \(report.hashedFiles) files hashed (\(report.hashedBytes) bytes) in \(String(format: "%.1f", ms)) ms")
            }
            lock.withLock { state = .idle }
            if wasError && work.rescanAll && !resuming {
                logger.notice("folder root is back; resuming")
                watcher?.stop()
                lock.withLock { watcher = nil }
                startWatcher()
            }
        } catch ScanError.cancelled {
            return
        } catch let error as ScanError {
            // Never record mass deletions because the root vanished or a mount went away.
            let first = lock.withLock { () -> Bool in
                defer { state = .error("\(error)"); pausedForMarker = true }
                return !pausedForMarker
            }
            if first {
                logger.error("\(error); the folder is paused until its root is back")
                events.error("\(error); the folder is paused until its root is back")
                enterUnknown("its root or its .syncd marker was missing")
            }
        } catch {
            logger.error("\(error); the folder is paused until the next scan succeeds")
            events.error("\(error); the folder is paused until the next scan succeeds")
            lock.withLock { state = .error("\(error)") }
        }
    }

    private func scheduleRescan() {
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global())
        let base = configuration.scanning.rescanInterval
        t.setEventHandler { [weak self] in
            guard let self else { return }
            let degraded = self.watcher?.isDegraded ?? true
            self.enqueue(WatchBatch(rescanAll: true))
            // ±10 % jitter so many folders/peers do not rescan in lockstep; faster when blind.
            let next = degraded ? min(base, self.configuration.scanning.degradedRescanInterval) : base * Double.random(in: 0.9...1.1)
            t.schedule(deadline: .now() + next)
        }
        t.schedule(deadline: .now() + min(base * Double.random(in: 0.9...1.1), watcher == nil ? configuration.scanning.degradedRescanInterval : .infinity))
        t.resume()
        timer = t
    }

    static func loadIgnore(_ fs: POSIXFileSystem) -> IgnoreRules {
        guard let bytes = try? fs.readSmallFile(".syncignore") else { return .empty }
        return IgnoreRules(parsing: bytes)
    }
}

/// Commits scan batches on a serial queue, in order, with at most `depth` batches in flight.
/// The first failure is re-thrown to the scanner on its next submit and by `finish`.
final class BatchWriter: Sendable {
    let queue: DispatchQueue
    private let write: @Sendable ([LocalChange]) throws -> Void
    private let slots: Slots
    private let failure = Locked<Error?>(nil)

    init(queue: DispatchQueue, depth: Int = 2, write: @escaping @Sendable ([LocalChange]) throws -> Void) {
        self.queue = queue
        self.write = write
        self.slots = Slots(depth)
    }

    func submit(_ batch: [LocalChange]) throws {
        if let f = failure.withLock({ $0 }) { throw f }
        _ = slots.acquire()
        queue.async { [self] in
            defer { slots.release() }
            guard failure.withLock({ $0 }) == nil else { return }
            do { try write(batch) } catch { failure.withLock { $0 = error } }
        }
    }

    /// Waits for every submitted batch to be committed.
    func finish() throws {
        queue.sync {}
        if let f = failure.withLock({ $0 }) { throw f }
    }
}

/// The index seen through the store, path by path (incremental scans touch few paths).
struct StoreBaseline: ScanBaseline {
    let store: IndexStore
    let folder: Int64

    func state(of path: String) -> IndexedState? {
        (try? store.scanState(folder: folder, path: path)).flatMap { $0 }.map { IndexedState(metadata: $0.metadata, deleted: $0.deleted) }
    }

    func livePaths(under directory: String) -> [String] {
        (try? store.livePaths(folder: folder, under: directory)) ?? []
    }

    func liveFiles(withInode inode: UInt64) -> [String] {
        (try? store.liveFiles(folder: folder, inode: inode)) ?? []
    }

    func liveCount() -> Int {
        (try? store.liveCount(folder: folder)) ?? Int.max   // unknown: never "most"
    }
}

extension FolderService {
    /// Everything written before this call is handed to the scanner now (the watcher's queued
    /// events and the paths it holds to settle), so `syncd wait` counts it: the scan it queues
    /// shows as busy until it is recorded. False when the watcher did not answer in time.
    func flushPendingChanges() -> Bool {
        guard let w = lock.withLock({ watcher }) else { return true }   // no watcher: periodic rescans only
        return w.flush()
    }
}
