import SyncCore

/// Decides, per path, what this device's folder should hold, given its own index entry and the
/// latest entry each peer announced (Syncthing's "global version"). Pure: no I/O, no clock.
///
/// How a path is decided:
/// 1. Only the local entry and entries from `trustedWriters` count. Entries from any other peer
///    (read-only or storage devices) are ignored as if never announced: their edits must not
///    reach anyone (DESIGN.md, "a RO or storage peer's edits are ignored by everyone").
/// 2. Versions dominated by another version are stale. The rest are the *heads*.
/// 3. Heads that hold the same content (`sameContent`) do not conflict: only their histories
///    differ, and merging the vectors settles it (two peers that made the same conflict copy).
/// 4. Heads with different content conflict. The winner is the greatest head under
///    `ConflictOrder` (the same on every device); every other head is a loser, kept as a conflict
///    copy named by `ConflictCopyName` — never dropped.
/// 5. The vector to record after resolving is the merge of every counted vector when the heads
///    agree on the content (the next local edit then dominates all of them), and the winner's own
///    vector after a conflict: devices see concurrent versions in different orders, and only
///    if every device compares the *original* entries does the total order pick the same winner
///    everywhere — a merged vector would be a new entry whose rank depends on arrival order.
public struct GlobalState: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Conflict copies one path may have (10, as Syncthing's `maxConflicts`). A conflict that
        /// would need more is held, not resolved (`Decision.conflictHeld`): nothing is deleted to
        /// make room and no losing version is dropped; the user clears old copies to unblock it.
        /// 0 holds every conflict that needs a copy.
        public var maxConflictCopies: Int
        /// The mass-deletion guard trips when one plan would delete more than this percentage of
        /// the live local entries (50) and the deleting peers hold less than the rest (100 − 50 %).
        public var massDeletionPercent: Int
        /// A plan deleting fewer entries than this (10) never trips the guard: small folders shrink.
        public var massDeletionMinimum: Int

        public init(maxConflictCopies: Int = 10, massDeletionPercent: Int = 50, massDeletionMinimum: Int = 10) {
            self.maxConflictCopies = maxConflictCopies
            self.massDeletionPercent = massDeletionPercent
            self.massDeletionMinimum = massDeletionMinimum
        }
    }

    /// What this device should do about one path.
    public enum Decision: Hashable, Sendable {
        /// Every counted version is the local one.
        case inSync
        /// The local version is the newest; some trusted peer holds an older one or lacks the path.
        case localIsNewer
        /// The heads hold the content this device already has under other histories: record
        /// `mergedVersion` for the local entry, touch no file.
        case recordMergedVersion
        /// A peer's version replaces ours: a file, a directory, a symlink or a deletion.
        case need(FileEntry)
        /// Concurrent versions with different content.
        case conflict(Conflict)
        /// A conflict left unresolved: the path stays as it is here until the reason goes away.
        case conflictHeld(Hold)
        /// The path must never be written (`RelativePath.validate`, or a `.syncd` component).
        case refused(RelativePath.Problem)
    }

    public struct Conflict: Hashable, Sendable {
        /// The winning version as announced (its own vector; record `mergedVersion` after applying).
        public var winner: FileEntry
        /// True when the winner's content is what this device holds: nothing to fetch for it.
        public var winnerIsLocal: Bool
        /// Best first under `ConflictOrder`; one per distinct content.
        public var losers: [Loser]
    }

    public struct Loser: Hashable, Sendable {
        public var entry: FileEntry
        /// True when this is the content on disk here: rename it to `copyName` before placing the
        /// winner (no transfer). Otherwise fetch it from `providers` into `copyName`.
        public var isLocal: Bool
        /// Where the loser is kept; nil when there is nothing to keep (a deletion, or a directory,
        /// whose children are paths of their own and resolve on their own).
        public var copyName: String?
        /// Trusted peers that announced exactly this version.
        public var providers: [ShortDeviceID]
    }

    public enum Hold: Hashable, Sendable {
        /// Keeping the losers would exceed `maxConflictCopies`.
        case copyCapReached(existing: Int, cap: Int)
        /// No copy name fits in one path component (an absurdly long extension).
        case noCopyName
    }

    public struct PathResolution: Hashable, Sendable {
        public var path: String
        public var decision: Decision
        /// The vector to record with whatever this device holds at `path` after acting on
        /// `decision`: the merge of every counted version, or after a conflict the winner's own.
        /// For `.conflictHeld` and `.refused` it is the local vector, unchanged.
        public var mergedVersion: VersionVector
        /// Trusted peers that announced the winning version (where its chunks can be fetched).
        public var providers: [ShortDeviceID]
    }

    public struct MassDeletion: Hashable, Sendable {
        public var wouldDelete: Int
        public var liveLocalEntries: Int
        /// The trusted peers whose deletions these are, and the most live entries any of them holds.
        public var deletingPeers: [ShortDeviceID]
        public var remoteLiveEntries: Int
    }

    public enum Verdict: Hashable, Sendable {
        case proceed
        /// Apply nothing from this plan and pause the folder until a user confirms.
        case refuseMassDeletion(MassDeletion)
    }

    public struct FolderPlan: Hashable, Sendable {
        public var verdict: Verdict
        /// One per path any counted device knows, sorted by path (bytewise).
        public var resolutions: [PathResolution]

        /// Paths that will not be written, with the reason.
        public var refused: [PathResolution] {
            resolutions.filter { if case .refused = $0.decision { true } else { false } }
        }
    }

    public var configuration: Configuration
    /// Peers whose entries count. The local device's own entries always count.
    public var trustedWriters: Set<ShortDeviceID>

    public init(trustedWriters: Set<ShortDeviceID>, configuration: Configuration = Configuration()) {
        self.trustedWriters = trustedWriters
        self.configuration = configuration
    }

    // MARK: a whole folder

    /// Resolves every path in the local index and the peers' indexes (one latest entry per path
    /// per peer; for duplicates the higher `sequence` counts), then applies the mass-deletion
    /// guard unless `allowMassDeletion` (the user confirmed).
    public func plan(local: [FileEntry], peers: [ShortDeviceID: [FileEntry]],
                     allowMassDeletion: Bool = false) -> FolderPlan {
        var localByPath: [String: FileEntry] = [:]
        for entry in local { localByPath[entry.path] = entry }
        var peersByPath: [String: [ShortDeviceID: FileEntry]] = [:]
        for (peer, entries) in peers where trustedWriters.contains(peer) {
            for entry in entries {
                if let seen = peersByPath[entry.path]?[peer], seen.sequence > entry.sequence { continue }
                peersByPath[entry.path, default: [:]][peer] = entry
            }
        }
        let paths = Set(localByPath.keys).union(peersByPath.keys).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }

        // Live entries per peer (for the guard), and conflict copies live anywhere by the path they
        // were made for (for the cap).
        var peerLive: [ShortDeviceID: Int] = [:]
        var copies: [String: Set<String>] = [:]
        for path in paths where Self.validate(path) == nil {
            let remote = peersByPath[path] ?? [:]
            for (peer, entry) in remote where !entry.deleted { peerLive[peer, default: 0] += 1 }
            let live = localByPath[path].map { !$0.deleted } == true || remote.values.contains { !$0.deleted }
            if live, let original = ConflictCopyName.original(of: path) { copies[original, default: []].insert(path) }
        }
        let resolutions = paths.map { path in
            resolve(path: path, local: localByPath[path], peers: peersByPath[path] ?? [:],
                    existingCopies: copies[path] ?? [])
        }
        var verdict = Verdict.proceed
        if !allowMassDeletion, let tripped = massDeletion(resolutions, local: localByPath, peerLive: peerLive) {
            verdict = .refuseMassDeletion(tripped)
        }
        return FolderPlan(verdict: verdict, resolutions: resolutions)
    }

    /// The guard against a peer whose disk vanished (unmounted, wiped) announcing every file as
    /// deleted. Trips when the plan deletes more than `massDeletionPercent` % of the live local
    /// entries (and at least `massDeletionMinimum`), and every peer behind those deletions holds
    /// fewer live entries than the remaining share of ours — its index looks emptied, not
    /// reorganised. A real `rm -rf` trips it too; that is the point: a human confirms.
    func massDeletion(_ resolutions: [PathResolution], local: [String: FileEntry],
                      peerLive: [ShortDeviceID: Int]) -> MassDeletion? {
        let live = local.values.filter { !$0.deleted && Self.validate($0.path) == nil }.count
        var deleting = Set<ShortDeviceID>()
        var count = 0
        for r in resolutions {
            guard case .need(let entry) = r.decision, entry.deleted, local[r.path].map({ !$0.deleted }) == true
            else { continue }
            count += 1
            deleting.formUnion(r.providers)
        }
        let remoteLive = deleting.map { peerLive[$0] ?? 0 }.max() ?? 0
        guard Self.isMassDeletion(wouldDelete: count, liveLocal: live, remoteLive: remoteLive, configuration) else { return nil }
        return MassDeletion(wouldDelete: count, liveLocalEntries: live, deletingPeers: deleting.sorted(),
                            remoteLiveEntries: remoteLive)
    }

    /// The guard's rule on counts alone (for a receiver that sees one batch at a time): at least
    /// `massDeletionMinimum` deletions of live local entries, more than `massDeletionPercent` % of
    /// them, and a deleting peer that holds fewer live entries than the rest of ours.
    public static func isMassDeletion(wouldDelete: Int, liveLocal: Int, remoteLive: Int, _ configuration: Configuration) -> Bool {
        let percent = configuration.massDeletionPercent
        return wouldDelete >= configuration.massDeletionMinimum && wouldDelete * 100 > liveLocal * percent
            && remoteLive * 100 < liveLocal * (100 - percent)
    }

    // MARK: one path

    /// Decides one path. `peers` may hold untrusted peers (they are skipped); `existingCopies`
    /// are the live conflict copies already made for `path`, counted against the cap.
    public func resolve(path: String, local: FileEntry?, peers: [ShortDeviceID: FileEntry],
                        existingCopies: Set<String> = []) -> PathResolution {
        let localVersion = local?.version ?? VersionVector()
        let trusted = peers.filter { trustedWriters.contains($0.key) }
        if let problem = Self.validate(path) {
            return PathResolution(path: path, decision: .refused(problem), mergedVersion: localVersion,
                                  providers: trusted.keys.sorted())
        }
        let versions = Self.distinctVersions(local: local, peers: trusted)
        guard !versions.isEmpty else {
            return PathResolution(path: path, decision: .inSync, mergedVersion: localVersion, providers: [])
        }
        let merged = versions.reduce(VersionVector()) { $0.merged(with: $1.entry.version) }
        // Heads: versions no other version dominates, best first.
        let heads = versions
            .filter { v in !versions.contains { $0.entry.version.compare(v.entry.version) == .greater } }
            .sorted { ConflictOrder.wins($0.entry, over: $1.entry) }
        let winner = heads[0]
        let localHead = heads.first { $0.isLocal }
        func resolution(_ decision: Decision, _ version: VersionVector) -> PathResolution {
            PathResolution(path: path, decision: decision, mergedVersion: version, providers: winner.providers)
        }

        var losers: [Version] = []
        for head in heads.dropFirst() where !ConflictOrder.sameContent(head.entry, winner.entry) {
            if !losers.contains(where: { ConflictOrder.sameContent($0.entry, head.entry) }) { losers.append(head) }
        }
        if losers.isEmpty {
            if winner.isLocal && heads.count == 1 {
                return resolution(versions.count == 1 && !trusted.isEmpty ? .inSync : .localIsNewer, merged)
            }
            if let localHead, ConflictOrder.sameContent(localHead.entry, winner.entry) {
                return resolution(.recordMergedVersion, merged)
            }
            return resolution(.need(winner.entry), merged)
        }

        let kept = losers.map { loser in
            Loser(entry: loser.entry,
                  isLocal: localHead.map { ConflictOrder.sameContent($0.entry, loser.entry) } ?? false,
                  copyName: Self.keepsCopy(loser.entry)
                      ? ConflictCopyName.make(for: path, loser: loser.entry, winner: winner.entry.version) : nil,
                  providers: loser.providers)
        }
        if kept.contains(where: { Self.keepsCopy($0.entry) && $0.copyName == nil }) {
            return resolution(.conflictHeld(.noCopyName), localVersion)
        }
        let names = existingCopies.union(kept.compactMap(\.copyName))
        if names.count > existingCopies.count, names.count > configuration.maxConflictCopies {
            let hold = Hold.copyCapReached(existing: existingCopies.count, cap: configuration.maxConflictCopies)
            return resolution(.conflictHeld(hold), localVersion)
        }
        let winnerIsLocal = localHead.map { ConflictOrder.sameContent($0.entry, winner.entry) } ?? false
        return resolution(.conflict(Conflict(winner: winner.entry, winnerIsLocal: winnerIsLocal, losers: kept)),
                          winner.entry.version)
    }

    /// A copy is kept for files and symlinks; a deletion has nothing to keep and a directory's
    /// children are paths of their own.
    static func keepsCopy(_ entry: FileEntry) -> Bool {
        !entry.deleted && entry.kind != .directory
    }

    /// `RelativePath.validate`, plus `.syncd` at any depth: a nested folder's state directory
    /// must never be replicated by the folder around it.
    static func validate(_ path: String) -> RelativePath.Problem? {
        if let problem = RelativePath.validate(path) { return problem }
        if path.split(separator: "/").contains(where: { $0 == RelativePath.stateDirectory }) { return .stateDirectory }
        return nil
    }

    /// One version as seen by the devices that announced it.
    struct Version {
        var entry: FileEntry
        var isLocal: Bool
        var providers: [ShortDeviceID]
    }

    /// Equal vectors are one version: the local entry represents it when it is one of them,
    /// otherwise the announcing peer with the smallest id.
    static func distinctVersions(local: FileEntry?, peers: [ShortDeviceID: FileEntry]) -> [Version] {
        var out: [Version] = []
        if let local { out.append(Version(entry: local, isLocal: true, providers: [])) }
        for peer in peers.keys.sorted() {
            let entry = peers[peer]!
            if let i = out.firstIndex(where: { $0.entry.version == entry.version }) {
                out[i].providers.append(peer)
            } else {
                out.append(Version(entry: entry, isLocal: false, providers: [peer]))
            }
        }
        return out
    }
}

/// The total order that picks a conflict's winner, the same on every device (it reads only the
/// entries, never who is asking). Greater wins:
/// 1. an existing version beats a deletion — deleting is never preferred over keeping data;
/// 2. a directory beats a file or symlink — the file can be kept aside as a copy, while replacing
///    a directory would mean deleting children that are paths of their own;
/// 3. the later mtime;
/// 4. the larger modifying device id (`ConflictCopyName.modifier`, as Syncthing breaks ties);
/// 5. the larger counter of that device, then the larger encoded vector — concurrent vectors always
///    differ, so the order is strict and no two devices can each keep their own.
public enum ConflictOrder {
    public static func wins(_ a: FileEntry, over b: FileEntry) -> Bool {
        if a.deleted != b.deleted { return !a.deleted }
        let aDirectory = a.kind == .directory, bDirectory = b.kind == .directory
        if aDirectory != bDirectory { return aDirectory }
        if a.metadata.mtimeNs != b.metadata.mtimeNs { return a.metadata.mtimeNs > b.metadata.mtimeNs }
        let aDevice = ConflictCopyName.modifier(of: a.version), bDevice = ConflictCopyName.modifier(of: b.version)
        if aDevice != bDevice { return aDevice > bDevice }
        let aCount = a.version.value(for: aDevice), bCount = b.version.value(for: bDevice)
        if aCount != bCount { return aCount > bCount }
        return b.version.encoded.lexicographicallyPrecedes(a.version.encoded)
    }

    /// Same kind and mode, and same bytes or link target: two versions that differ only in history
    /// (mtime excluded: copies of the same content made on two devices carry their own mtimes).
    public static func sameContent(_ a: FileEntry, _ b: FileEntry) -> Bool {
        if a.deleted || b.deleted { return a.deleted == b.deleted }
        guard a.kind == b.kind, a.metadata.mode == b.metadata.mode else { return false }
        switch a.kind {
        case .directory: return true   // a directory's size is the file system's business
        case .symlink: return a.metadata.symlinkTarget == b.metadata.symlinkTarget
        case .file: return a.size == b.size && a.chunks == b.chunks
        }
    }
}
