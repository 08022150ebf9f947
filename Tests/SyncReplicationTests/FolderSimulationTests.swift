import Foundation
import XCTest
@testable import SyncReplication

/// The replication simulator's seeds (Docs/Testing.md, "The replication simulator"):
/// - CI runs seeds 1…500 (`SYNCD_SIM_SEEDS` and `SYNCD_SIM_FIRST` change the range);
/// - `SYNCD_SIM_SEED=N swift test --filter FolderSimulationTests/test_replay` replays one seed
///   with its log (`scripts/simulate.sh` runs long campaigns).
final class FolderSimulationTests: XCTestCase {
    static func env(_ name: String) -> UInt64? { ProcessInfo.processInfo.environment[name].flatMap { UInt64($0) } }

    func test_everySeedOfTheBudget_convergesWithoutLossTornFilesOrFalseInSync() {
        let first = Self.env("SYNCD_SIM_FIRST") ?? 1
        let count = Self.env("SYNCD_SIM_SEEDS") ?? 500
        var failures: [String] = []
        let started = Date()
        for seed in first..<(first + count) {
            let sim = FolderSimulation(seed: seed)
            let violations = sim.run()
            if !violations.isEmpty {
                failures.append("seed=\(seed) (\(sim.knobs)): \(violations.prefix(3).joined(separator: " | "))")
                if failures.count >= 5 { break }
            }
        }
        print("simulated seeds \(first)…\(first + count - 1) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s, \(failures.count) failing")
        XCTAssert(failures.isEmpty, "replay with SYNCD_SIM_SEED=<seed> swift test --filter FolderSimulationTests/test_replay\n" + failures.joined(separator: "\n"))
    }

    func test_replay() throws {
        guard let seed = Self.env("SYNCD_SIM_SEED") else { throw XCTSkip("set SYNCD_SIM_SEED to replay one seed") }
        let sim = FolderSimulation(seed: seed, verbose: true,
                                   mutation: ProcessInfo.processInfo.environment["SYNCD_SIM_MUTATION"].flatMap(FolderSimulation.Mutation.init))
        let violations = sim.run()
        print("seed=\(seed) \(sim.knobs)")
        XCTAssert(violations.isEmpty, violations.joined(separator: "\n"))
    }

    func test_aSeedReplaysExactly() {
        let a = FolderSimulation(seed: 42), b = FolderSimulation(seed: 42)
        _ = a.run(); _ = b.run()
        XCTAssertEqual(a.changes, b.changes)
        XCTAssertEqual(a.peers.map { a.tree($0) }, b.peers.map { b.tree($0) })
        XCTAssertEqual(a.elapsed, b.elapsed)
        XCTAssertEqual(a.nextContent, b.nextContent)
    }

    /// The invariants are not vacuous: with a rule of the engine broken on purpose, some seed of
    /// the first hundred fails.
    func test_brokenRules_areCaughtBySomeSeed() {
        for mutation in FolderSimulation.Mutation.allCases {
            var caught: UInt64?
            for seed in UInt64(1)...100 {
                if !FolderSimulation(seed: seed, mutation: mutation).run().isEmpty { caught = seed; break }
            }
            XCTAssertNotNil(caught, "no seed caught \(mutation)")
            if let caught { print("\(mutation) caught by seed \(caught)") }
        }
    }
}
