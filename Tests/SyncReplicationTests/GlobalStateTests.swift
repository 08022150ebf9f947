import SyncCore
@testable import SyncReplication
import XCTest

/// Devices chosen so their ids sort A < B < C < R.
private let a: ShortDeviceID = 0x1111_0000_0000_0001
private let b: ShortDeviceID = 0x2222_0000_0000_0002
private let c: ShortDeviceID = 0x3333_0000_0000_0003
private let readOnly: ShortDeviceID = 0x9999_0000_0000_0009

private func indexed(_ counters: [ShortDeviceID: UInt64], mtime: Int64 = 1_000, content: UInt64 = 1,
                     kind: FileKind = .file, deleted: Bool = false) -> FileEntry {
    indexed("f.txt", counters, mtime: mtime, content: content, kind: kind, deleted: deleted)
}

/// An index entry whose content is one 10-byte chunk named by `content`; mtime in seconds.
private func indexed(_ path: String, _ counters: [ShortDeviceID: UInt64], mtime: Int64 = 1_000,
                     content: UInt64 = 1, kind: FileKind = .file, deleted: Bool = false) -> FileEntry {
    let chunks = kind == .file && !deleted ? [ChunkRef(id: ChunkID(w0: content, w1: 0, w2: 0, w3: 0), size: 10)] : []
    let metadata = FileMetadata(kind: kind, size: Int64(chunks.count * 10), mode: 0o644,
                                mtimeNs: mtime * 1_000_000_000, ctimeNs: 0, inode: 0,
                                symlinkTarget: kind == .symlink ? "target-\(content)" : nil)
    return FileEntry(path: path, metadata: metadata, deleted: deleted,
                     version: VersionVector(counters.map { .init(device: $0.key, value: $0.value) }), chunks: chunks)
}

final class GlobalStateTests: XCTestCase {
    private let state = GlobalState(trustedWriters: [a, b, c])

    // MARK: ordered versions

    func test_resolve_shouldNeedThePeerVersion_whenItDominates() {
        let local = indexed([a: 1]), remote = indexed([a: 1, b: 1], content: 2)
        let r = state.resolve(path: "f.txt", local: local, peers: [b: remote])
        XCTAssertEqual(r.decision, .need(remote))
        XCTAssertEqual(r.mergedVersion, remote.version)
        XCTAssertEqual(r.providers, [b])
    }

    func test_resolve_shouldNeedIt_whenThePathIsNewHere() {
        let remote = indexed([b: 1])
        XCTAssertEqual(state.resolve(path: "f.txt", local: nil, peers: [b: remote]).decision, .need(remote))
    }

    func test_resolve_shouldReportLocalIsNewer_whenOursDominatesOrPeersLackIt() {
        let local = indexed([a: 2, b: 1], content: 3)
        XCTAssertEqual(state.resolve(path: "f.txt", local: local, peers: [b: indexed([a: 1, b: 1])]).decision,
                       .localIsNewer)
        XCTAssertEqual(state.resolve(path: "f.txt", local: local, peers: [:]).decision, .localIsNewer)
    }

    func test_resolve_shouldBeInSync_whenEveryoneHasOurVersion() {
        let local = indexed([a: 2])
        let r = state.resolve(path: "f.txt", local: local, peers: [b: local, c: local])
        XCTAssertEqual(r.decision, .inSync)
        XCTAssertEqual(r.mergedVersion, local.version)
    }

    func test_resolve_shouldNeedDeletionsDirectoriesAndSymlinks() {
        for remote in [indexed([a: 1, b: 1], deleted: true), indexed([a: 1, b: 1], kind: .directory),
                       indexed([a: 1, b: 1], kind: .symlink)] {
            XCTAssertEqual(state.resolve(path: "f.txt", local: indexed([a: 1]), peers: [b: remote]).decision,
                           .need(remote))
        }
    }

    // MARK: conflicts

    func test_resolve_shouldPickTheSameWinnerOnBothDevices_whenTwoEditsAreConcurrent() {
        let fromA = indexed([a: 5], mtime: 2_000, content: 1), fromB = indexed([b: 5], mtime: 1_000, content: 2)
        let onA = state.resolve(path: "f.txt", local: fromA, peers: [b: fromB])
        let onB = state.resolve(path: "f.txt", local: fromB, peers: [a: fromA])
        guard case .conflict(let conflictA) = onA.decision, case .conflict(let conflictB) = onB.decision else {
            return XCTFail("expected conflicts, got \(onA.decision) and \(onB.decision)")
        }
        XCTAssertEqual(conflictA.winner, fromA)
        XCTAssertEqual(conflictB.winner, fromA)
        XCTAssertTrue(conflictA.winnerIsLocal)
        XCTAssertFalse(conflictB.winnerIsLocal)
        XCTAssertEqual(conflictA.losers.map(\.entry), [fromB])
        XCTAssertEqual(conflictA.losers.map(\.isLocal), [false])
        XCTAssertEqual(conflictB.losers.map(\.isLocal), [true])
        XCTAssertEqual(conflictA.losers.map(\.copyName), conflictB.losers.map(\.copyName))
        XCTAssertEqual(conflictA.losers[0].copyName, "f.sync-conflict-19700101-001640-EIRAAAA.txt")
        XCTAssertEqual(onA.mergedVersion, onB.mergedVersion)
    }

    func test_mergedVersion_shouldLetTheNextLocalEditDominate_whenTheContentAgrees() {
        let fromA = indexed([a: 5], mtime: 2_000), fromB = indexed([b: 7], mtime: 1_000)
        let r = state.resolve(path: "f.txt", local: fromA, peers: [b: fromB])
        XCTAssertEqual(r.decision, .recordMergedVersion)
        let nextEdit = r.mergedVersion.incremented(by: a)
        XCTAssertEqual(nextEdit.compare(fromA.version), .greater)
        XCTAssertEqual(nextEdit.compare(fromB.version), .greater)
    }

    /// Three devices edit one file at once (same mtime, as a jiffy-granular clock often gives);
    /// each device meets the other two versions in its own order, resolving two at a time. All
    /// end with the same winner — the one resolving all three at once picks — because a conflict
    /// records the winner's own vector (a merged one would rank differently in the next round).
    func test_conflictWinner_isTheSameInEveryArrivalOrder() {
        let d: ShortDeviceID = 0x0444_0000_0000_0004
        let versions = [b, c, d].enumerated().map { i, device in
            indexed([a: 1, device: 1], mtime: 5_000, content: UInt64(i + 1))
        }
        let all = GlobalState(trustedWriters: [a, b, c, d])
        guard case .conflict(let together) = all.resolve(path: "f.txt", local: versions[0],
                                                          peers: [c: versions[1], d: versions[2]]).decision
        else { return XCTFail() }
        for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            var held = versions[order[0]]
            for next in order.dropFirst() {
                let r = all.resolve(path: "f.txt", local: held, peers: [a: versions[next]])
                switch r.decision {
                case .conflict(let conflict):
                    held = conflict.winner
                    held.version = r.mergedVersion
                case .need(let entry):
                    held = entry
                default: XCTFail("\(r.decision)")
                }
            }
            XCTAssertEqual(held, together.winner, "order \(order)")
        }
    }

    func test_resolve_shouldBreakMtimeTiesByTheLargerModifyingDevice() {
        let fromA = indexed([a: 5], content: 1), fromC = indexed([c: 5], content: 2)
        guard case .conflict(let conflict) = state.resolve(path: "f.txt", local: fromA, peers: [c: fromC]).decision
        else { return XCTFail() }
        XCTAssertEqual(conflict.winner, fromC)
    }

    func test_resolve_shouldConvergeOnThreeDevices_forEveryInputOrderAndVantagePoint() {
        var random = SplitMix64(seed: 42)
        var conflicts = 0
        for round in 0..<200 {
            // Three concurrent edits with random (often equal) mtimes, one vantage point per device.
            let devices = [a, b, c]
            var edits: [ShortDeviceID: FileEntry] = [:]
            for (i, device) in devices.enumerated() {
                let mtime = Int64(random.next() % 3)
                var counters: [ShortDeviceID: UInt64] = [a: 1]   // a common ancestor edited on A
                counters[device] = 1 + random.next() % 4
                let deleted = random.next() % 4 == 0
                edits[device] = indexed(counters, mtime: mtime, content: UInt64(10 + i), deleted: deleted)
            }
            var outcomes: Set<[String]> = []
            var sawConflict = false
            for me in devices {
                let peers = edits.filter { $0.key != me }
                let plan = state.plan(local: [edits[me]!], peers: peers.mapValues { [$0] })
                outcomes.insert(Self.summary(plan.resolutions[0], local: edits[me]!))
                if case .conflict = plan.resolutions[0].decision { sawConflict = true }
            }
            XCTAssertEqual(outcomes.count, 1, "round \(round): \(outcomes)")
            if sawConflict { conflicts += 1 }
        }
        XCTAssertGreaterThan(conflicts, 100, "the rounds should mostly be conflicts")
    }

    func test_plan_shouldNotDependOnTheOrderOfItsInputs() {
        let local = [indexed("x", [a: 2]), indexed("y", [a: 1], content: 3), indexed("z", [a: 1], deleted: true)]
        let fromB = [indexed("x", [a: 1, b: 1], content: 4), indexed("y", [b: 2], mtime: 5), indexed("w", [b: 1])]
        let fromC = [indexed("x", [c: 1], mtime: 7), indexed("z", [a: 1, c: 1]), indexed("w", [b: 1])]
        let reference = state.plan(local: local, peers: [b: fromB, c: fromC])
        var random = SplitMix64(seed: 7)
        func shuffled(_ list: [FileEntry]) -> [FileEntry] {
            var copy = list
            for i in stride(from: copy.count - 1, to: 0, by: -1) { copy.swapAt(i, Int(random.next() % UInt64(i + 1))) }
            return copy
        }
        for _ in 0..<20 {
            let plan = state.plan(local: shuffled(local), peers: [c: shuffled(fromC), b: shuffled(fromB)])
            XCTAssertEqual(plan, reference)
        }
        XCTAssertEqual(reference.resolutions.map(\.path), ["w", "x", "y", "z"])
    }

    /// What a device ends up holding: winner content, merged vector and the copies kept, whichever
    /// device computed it.
    private static func summary(_ r: GlobalState.PathResolution, local: FileEntry) -> [String] {
        switch r.decision {
        case .conflict(let conflict):
            let w = conflict.winner
            return ["\(w.deleted) \(w.chunks)", "\(r.mergedVersion)"]
                + conflict.losers.compactMap(\.copyName).sorted()
        case .need(let w):
            return ["\(w.deleted) \(w.chunks)", "\(r.mergedVersion)"]
        case .localIsNewer, .inSync, .recordMergedVersion:
            return ["\(local.deleted) \(local.chunks)", "\(r.mergedVersion)"]
        default:
            return ["unexpected \(r.decision)"]
        }
    }

    func test_resolve_shouldKeepTheModification_whenADeletionIsConcurrentAndNewer() {
        let deletedOnA = indexed([a: 2], mtime: 9_000, deleted: true), editedOnB = indexed([a: 1, b: 1], mtime: 1_000)
        let onA = state.resolve(path: "f.txt", local: deletedOnA, peers: [b: editedOnB])
        guard case .conflict(let conflict) = onA.decision else { return XCTFail("\(onA.decision)") }
        XCTAssertEqual(conflict.winner, editedOnB)
        XCTAssertEqual(conflict.losers.map(\.copyName), [nil], "a deletion leaves nothing to keep")
        let onB = state.resolve(path: "f.txt", local: editedOnB, peers: [a: deletedOnA])
        guard case .conflict(let seenFromB) = onB.decision else { return XCTFail("\(onB.decision)") }
        XCTAssertTrue(seenFromB.winnerIsLocal)
    }

    func test_resolve_shouldLetADirectoryBeatAFile_andKeepTheFile() {
        let dir = indexed([a: 1], mtime: 1, kind: .directory), file = indexed([b: 1], mtime: 9)
        guard case .conflict(let conflict) = state.resolve(path: "f.txt", local: file, peers: [a: dir]).decision
        else { return XCTFail() }
        XCTAssertEqual(conflict.winner, dir)
        XCTAssertEqual(conflict.losers.first?.isLocal, true)
        XCTAssertNotNil(conflict.losers.first?.copyName)
    }

    func test_resolve_shouldKeepASymlinkLoser_butNotADirectoryLoser() {
        let link = indexed([a: 1], mtime: 1, kind: .symlink), file = indexed([b: 1], mtime: 9)
        guard case .conflict(let c1) = state.resolve(path: "l", local: link, peers: [b: file]).decision
        else { return XCTFail() }
        XCTAssertEqual(c1.losers.map(\.copyName), ["l.sync-conflict-19700101-000001-CEIQAAA"])
        let dirA = indexed([a: 1], kind: .directory), dirB = indexed([b: 1], kind: .directory)
        var dirB700 = dirB
        dirB700.metadata.mode = 0o700
        guard case .conflict(let c2) = state.resolve(path: "d", local: dirA, peers: [b: dirB700]).decision
        else { return XCTFail() }
        XCTAssertEqual(c2.losers.map(\.copyName), [nil])
    }

    func test_resolve_shouldOnlyMergeHistories_whenConcurrentVersionsHoldTheSameContent() {
        let copyOnA = indexed([a: 1], mtime: 5), copyOnB = indexed([b: 1], mtime: 6)
        let r = state.resolve(path: "f.txt", local: copyOnA, peers: [b: copyOnB])
        XCTAssertEqual(r.decision, .recordMergedVersion)
        XCTAssertEqual(r.mergedVersion, copyOnA.version.merged(with: copyOnB.version))
        XCTAssertEqual(state.resolve(path: "f.txt", local: indexed([a: 1], deleted: true),
                                     peers: [b: indexed([b: 1], deleted: true)]).decision, .recordMergedVersion)
    }

    // MARK: conflict-copy cap

    func test_resolve_shouldHoldTheConflict_whenTheCopyCapIsReached() {
        let fromA = indexed([a: 1], mtime: 2), fromB = indexed([b: 1], mtime: 1, content: 2)
        let copies = Set((0..<10).map { "f.sync-conflict-2000010\($0)-000000-AAAAAAA.txt" })
        let held = state.resolve(path: "f.txt", local: fromA, peers: [b: fromB], existingCopies: copies)
        XCTAssertEqual(held.decision, .conflictHeld(.copyCapReached(existing: 10, cap: 10)))
        XCTAssertEqual(held.mergedVersion, fromA.version, "a held conflict changes nothing here")
        let nine = state.resolve(path: "f.txt", local: fromA, peers: [b: fromB],
                                 existingCopies: Set(copies.dropFirst()))
        guard case .conflict = nine.decision else { return XCTFail("\(nine.decision)") }
    }

    func test_resolve_shouldNotCountACopyThatAlreadyExists_andHonourAConfiguredCap() {
        let small = GlobalState(trustedWriters: [a, b], configuration: .init(maxConflictCopies: 1))
        let fromA = indexed([a: 1], mtime: 2), fromB = indexed([b: 1], mtime: 1, content: 2)
        let name = ConflictCopyName.make(for: "f.txt", loser: fromB)!
        guard case .conflict = small.resolve(path: "f.txt", local: fromA, peers: [b: fromB],
                                             existingCopies: [name]).decision else { return XCTFail() }
        XCTAssertEqual(small.resolve(path: "f.txt", local: fromA, peers: [b: fromB],
                                     existingCopies: ["f.sync-conflict-20000101-000000-AAAAAAA.txt"]).decision,
                       .conflictHeld(.copyCapReached(existing: 1, cap: 1)))
    }

    func test_plan_shouldCountCopiesAnnouncedByPeers() {
        let small = GlobalState(trustedWriters: [a, b], configuration: .init(maxConflictCopies: 1))
        let old = indexed("f.sync-conflict-20000101-000000-AAAAAAA.txt", [b: 1], content: 7)
        let plan = small.plan(local: [indexed([a: 1], mtime: 2)],
                              peers: [b: [indexed([b: 1], mtime: 1, content: 2), old]])
        XCTAssertEqual(plan.resolutions.first { $0.path == "f.txt" }?.decision,
                       .conflictHeld(.copyCapReached(existing: 1, cap: 1)))
    }

    // MARK: trust and refusal

    func test_resolve_shouldIgnoreAnUntrustedPeer() {
        let local = indexed([a: 1]), hostile = indexed([a: 1, readOnly: 9], content: 6)
        XCTAssertEqual(state.resolve(path: "f.txt", local: local, peers: [readOnly: hostile]).decision, .localIsNewer)
        let plan = state.plan(local: [local], peers: [readOnly: [hostile, indexed("new", [readOnly: 1])], b: [local]])
        XCTAssertEqual(plan.resolutions.map(\.path), ["f.txt"])
        XCTAssertEqual(plan.resolutions[0].decision, .inSync)
    }

    func test_plan_shouldRefuseInvalidPathsAndStateDirectories() {
        let bad = ["../etc/passwd", "/abs", "a//b", ".syncd/trash/x", "sub/.syncd/index", "a/./b", ""]
        let plan = state.plan(local: [], peers: [b: bad.map { indexed($0, [b: 1]) } + [indexed("ok.txt", [b: 1])]])
        XCTAssertEqual(Set(plan.refused.map(\.path)), Set(bad))
        XCTAssertTrue(plan.refused.allSatisfy { $0.providers == [b] })
        XCTAssertEqual(plan.refused.first { $0.path == "sub/.syncd/index" }?.decision, .refused(.stateDirectory))
        XCTAssertEqual(plan.resolutions.filter { if case .need = $0.decision { true } else { false } }.map(\.path),
                       ["ok.txt"])
    }

    // MARK: mass-deletion guard

    private func liveFolder(_ count: Int) -> [FileEntry] {
        (0..<count).map { indexed("file\($0)", [a: 1], content: UInt64($0)) }
    }

    func test_plan_shouldRefuse_whenAnEmptiedPeerWouldDeleteMostFiles() {
        let local = liveFolder(20)
        let wiped = local.map { e in indexed(e.path, [a: 1, b: 1], deleted: true) }
        let plan = state.plan(local: local, peers: [b: wiped])
        XCTAssertEqual(plan.verdict, .refuseMassDeletion(.init(wouldDelete: 20, liveLocalEntries: 20,
                                                                deletingPeers: [b], remoteLiveEntries: 0)))
        XCTAssertEqual(state.plan(local: local, peers: [b: wiped], allowMassDeletion: true).verdict, .proceed)
    }

    func test_plan_shouldProceed_whenThePeerReorganisedOrTheBatchIsSmall() {
        let local = liveFolder(20)
        // 15 deleted, 30 added: the peer's index is full, not emptied.
        let moved = local.prefix(15).map { indexed($0.path, [a: 1, b: 1], deleted: true) }
            + (0..<30).map { indexed("new\($0)", [b: 1]) } + local.suffix(5)
        XCTAssertEqual(state.plan(local: local, peers: [b: moved]).verdict, .proceed)
        // Half or less deleted.
        let half = local.prefix(10).map { indexed($0.path, [a: 1, b: 1], deleted: true) } + local.suffix(10)
        XCTAssertEqual(state.plan(local: local, peers: [b: half]).verdict, .proceed)
        // A small folder emptied on purpose: below the minimum.
        let small = liveFolder(5)
        XCTAssertEqual(state.plan(local: small, peers: [b: small.map { indexed($0.path, [a: 1, b: 1], deleted: true) }])
            .verdict, .proceed)
    }
}
