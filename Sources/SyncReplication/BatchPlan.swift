import SyncCore

/// What one batch of a peer's entries asks of this folder (Protocol/wire.md, "Replication" 4):
/// the steps that change files, the entries to record without touching a file, and what to do
/// with our own losing versions. Made by `BatchPlan.make` from `GlobalState` — the one place
/// conflicts are decided — and carried out by a placer (the daemon's, or a simulator's).
public struct BatchPlan: Hashable, Sendable {
    /// One change to the folder, in the entry's path text.
    public enum Step: Hashable, Sendable {
        case directory(FileEntry)
        case file(FileEntry)
        case symlink(FileEntry)
        case delete(FileEntry)
        /// The remote version lost a conflict: keep its content beside ours under `name`.
        case conflictCopy(FileEntry, name: String)
        /// The remote version of a symlink lost a conflict: keep the link beside ours.
        case conflictLink(FileEntry, name: String)

        /// The entry the step is about.
        public var entry: FileEntry {
            switch self {
            case .directory(let e), .file(let e), .symlink(let e), .delete(let e), .conflictCopy(let e, _), .conflictLink(let e, _): e
            }
        }

        /// The step that puts `entry` in place.
        public static func placing(_ entry: FileEntry) -> Step {
            if entry.deleted { return .delete(entry) }
            switch entry.kind {
            case .directory: return .directory(entry)
            case .symlink: return .symlink(entry)
            case .file: return .file(entry)
            }
        }
    }

    /// In `conflictsLocal`: our losing version goes to the trash instead of beside the winner.
    public static let toTrash = "\u{0}trash"

    public var steps: [Step] = []
    /// Entries to record as they are: only the history moved, or a deletion of what we never had.
    public var recordOnly: [FileEntry] = []
    /// path → where our losing version goes (a conflict copy name, or `toTrash`).
    public var conflictsLocal: [String: String] = [:]
    /// Conflicts resolved by this plan, and human-readable notes (held conflicts, refused paths).
    public var conflicts = 0
    /// The paths of those conflicts (path text), in plan order.
    public var conflictPaths: [String] = []
    public var notes: [String] = []

    public init() {}

    /// Whether the plan changes nothing and records nothing.
    public var isEmpty: Bool { steps.isEmpty && recordOnly.isEmpty }

    /// Plans `entries` of `origin` (a trusted writer: its manifest's signature proves it) against
    /// this device's entries for the same paths (`locals`, missing when never seen). Conflict
    /// copies are not capped here (`maxConflictCopies: .max`): the placer moves the oldest copy to
    /// the trash, so no conflict is ever held.
    /// - A conflict copy never becomes a conflict itself: a losing copy goes to the trash, as on
    ///   every other peer that resolves the same conflict.
    public static func make(_ entries: [FileEntry], locals: [String: FileEntry], origin: ShortDeviceID) -> BatchPlan {
        var plan = BatchPlan()
        let state = GlobalState(trustedWriters: [origin], configuration: .init(maxConflictCopies: .max))
        for remote in entries {
            let local = locals[remote.path]
            let resolution = state.resolve(path: remote.path, local: local, peers: [origin: remote])
            var winner = remote
            winner.version = resolution.mergedVersion
            switch resolution.decision {
            case .inSync, .localIsNewer:
                continue
            case .recordMergedVersion:
                plan.recordOnly.append(winner)
            case .need(let entry):
                winner = entry
                winner.version = resolution.mergedVersion
                if let local, !local.deleted, !winner.deleted, ConflictOrder.sameContent(local, winner),
                   local.metadata.mtimeNs == winner.metadata.mtimeNs {
                    plan.recordOnly.append(winner)   // only the history moved (our own version coming back merged)
                } else if local == nil && winner.deleted {
                    plan.recordOnly.append(winner)   // a deletion of something we never had: remember it
                } else {
                    plan.steps.append(.placing(winner))
                }
            case .conflict(let conflict):
                plan.conflicts += 1
                plan.conflictPaths.append(remote.path)
                plan.notes.append("conflict on \(RelativePath.display(remote.path)): \(conflict.winnerIsLocal ? "our" : "the peer's") version wins")
                for loser in conflict.losers {
                    if ConflictCopyName.original(of: remote.path) != nil {
                        if loser.isLocal { plan.conflictsLocal[remote.path] = toTrash }
                        continue
                    }
                    guard let copy = loser.copyName else { continue }
                    if loser.isLocal {
                        plan.conflictsLocal[remote.path] = copy
                    } else if loser.entry.kind == .symlink {
                        plan.steps.append(.conflictLink(loser.entry, name: copy))
                    } else {
                        plan.steps.append(.conflictCopy(loser.entry, name: copy))
                    }
                }
                // The winner keeps its own vector (GlobalState, rule 5): nothing to record when it is ours.
                if !conflict.winnerIsLocal {
                    winner = conflict.winner
                    winner.version = resolution.mergedVersion
                    plan.steps.append(.placing(winner))
                }
            case .conflictHeld(let hold):
                plan.notes.append("conflict on \(RelativePath.display(remote.path)) held: \(hold)")
            case .refused(let problem):
                plan.notes.append("refused \(RelativePath.display(remote.path)) from \(String(origin, radix: 16)): \(problem)")
            }
        }
        return plan
    }

    /// Live paths the plan deletes and creates, counted against `locals` (the receiver's
    /// mass-deletion guard, `GlobalState.isMassDeletion`).
    public func deletions(against locals: [String: FileEntry]) -> (deleting: Int, creating: Int) {
        var deleting = 0, creating = 0
        for step in steps {
            switch step {
            case .delete(let e): if let local = locals[e.path], !local.deleted { deleting += 1 }
            case .file(let e), .directory(let e), .symlink(let e): if locals[e.path].map({ $0.deleted }) ?? true { creating += 1 }
            default: break
            }
        }
        return (deleting, creating)
    }
}
