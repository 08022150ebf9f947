@testable import SyncGossip
import XCTest

/// The whole protocol on a virtual clock: convergence, partitions, one-way loss, mass restarts and
/// a starved node, deterministic for a given seed.
final class SimulationTests: XCTestCase {
    /// Serf's convergence table for a 200 ms gossip interval and fanout 3 gives 99.99 % of 100
    /// nodes informed in 2.2 s at 0 % loss. Its model (logistic spread) scales with
    /// ln((n − 1) · p / (1 − p)), so 200 nodes take ln(199 · 9999) / ln(99 · 9999) = 1.05 × as long,
    /// and packet loss slows the contact rate by (1 − loss).
    static func serfBound(nodes: Int, loss: Double) -> Nanos {
        let scale = log(Double(nodes - 1) * 9999) / log(99 * 9999)
        return Nanos(2.2 * scale / (1 - loss) * 1e9)
    }

    func joinTime(nodes n: Int, loss: Double, seed: UInt64) -> Nanos? {
        var sim = Simulation(count: n, seed: seed)
        sim.converge(0..<(n - 1))
        sim.nodes[n - 1].swim = Simulation.instance(n - 1, uid: 1, settings: sim.settings, now: 0)
        sim.loss = loss
        sim.run(for: .seconds(1))   // the settled cluster runs for a while first
        let start = sim.now
        sim.execute(n - 1, sim.nodes[n - 1].swim.join([Simulation.endpoint(0)], now: sim.now))
        sim.run(for: .seconds(30)) { $0.fractionSeeingAlive(n - 1) >= 0.9999 }
        XCTAssertLessThanOrEqual(sim.maxPacket, 1400)
        return sim.fractionSeeingAlive(n - 1) >= 0.9999 ? sim.now - start : nil
    }

    func test_join_shouldConvergeWithinSerfsTable_at0_10_50PercentLoss() throws {
        for loss in [0.0, 0.1, 0.5] {
            let t = try XCTUnwrap(joinTime(nodes: 200, loss: loss, seed: 7), "no convergence at \(loss)")
            let bound = Self.serfBound(nodes: 200, loss: loss)
            print("join of 1 node into 200 at \(Int(loss * 100)) % loss: \(Double(t) / 1e9) s (bound \(Double(bound) / 1e9) s)")
            XCTAssertLessThanOrEqual(t, bound, "loss \(loss)")
        }
    }

    func test_partition_thenHeal_shouldMergeByItself() {
        var settings = SWIMSettings()
        settings.reconnectInterval = .seconds(10)
        var sim = Simulation(count: 20, settings: settings, seed: 3)
        sim.converge()
        sim.partition(0..<10, 10..<20)
        sim.run(for: .seconds(60))
        XCTAssertEqual(sim.status(of: 15, seenBy: 2), .dead, "each side declares the other dead")
        XCTAssertEqual(sim.status(of: 2, seenBy: 15), .dead)
        sim.heal()
        let healed = sim.now
        sim.run(for: .seconds(120)) { s in s.nodes.indices.allSatisfy { s.fractionSeeingAlive($0) == 1 } }
        XCTAssertTrue(sim.nodes.indices.allSatisfy { sim.fractionSeeingAlive($0) == 1 }, "not merged 120 s after healing")
        print("partition healed and merged in \(Double(sim.now - healed) / 1e9) s")
    }

    /// Node 0 receives no UDP at all but TCP works: the TCP fallback ping keeps everyone honest.
    func test_oneWayUDPLoss_shouldNotKillAnyone() {
        var sim = Simulation(count: 10, seed: 5)
        sim.converge()
        for j in 1..<10 { sim.blocked.insert([j, 0]) }
        var deaths: [(Int, Int)] = []
        sim.run(for: .seconds(120)) { s in deaths += s.falseDeaths(); return false }
        XCTAssertTrue(deaths.isEmpty, "false deaths: \(deaths.prefix(5))")
    }

    /// Half the cluster restarts at once; the old lives had high incarnations, the new ones start
    /// at 1 with a new uid, and still win.
    func test_massRestart_withStaleIncarnations_shouldConverge() {
        var sim = Simulation(count: 20, seed: 11)
        sim.converge()
        for i in sim.nodes.indices {   // every node has refuted a few times: incarnation 6
            _ = sim.nodes[i].swim.receive([.suspect(name: Simulation.name(i), uid: 1, incarnation: 5, from: 99)],
                                          from: Simulation.endpoint(99), now: sim.now)
        }
        sim.converge()
        XCTAssertEqual(sim.nodes[3].swim.member(Simulation.name(4))?.incarnation, 6)
        sim.run(for: .seconds(5))
        for i in 0..<10 { sim.nodes[i].up = false }
        sim.run(for: .seconds(2))
        for i in 0..<10 {
            sim.nodes[i] = Simulation.Node(swim: Simulation.instance(i, uid: 2, settings: sim.settings, now: sim.now))
            sim.execute(i, sim.nodes[i].swim.join([Simulation.endpoint(15)], now: sim.now))
        }
        sim.run(for: .seconds(60)) { s in s.nodes.indices.allSatisfy { s.fractionSeeingAlive($0) == 1 } }
        XCTAssertTrue(sim.nodes.indices.allSatisfy { sim.fractionSeeingAlive($0) == 1 })
        XCTAssertTrue(sim.falseDeaths().isEmpty)
    }

    /// A node frozen for 8 s (no timers, no reads) then catching up must not get healthy peers
    /// declared dead: its late probes meet refutations, and its own health score slows it down.
    func test_cpuStarvedNode_shouldNotGetHealthyPeersDeclaredDead() {
        var sim = Simulation(count: 20, seed: 13)
        sim.converge()
        sim.run(for: .seconds(5))
        sim.nodes[3].frozenUntil = sim.now + .seconds(8)
        let healthy = sim.nodes.indices.filter { $0 != 3 }
        var deaths: [(Int, Int)] = []
        var starvedWasNoticed = false
        sim.run(for: .seconds(60)) { s in
            deaths += s.falseDeaths(among: healthy)
            starvedWasNoticed = starvedWasNoticed || healthy.contains { s.status(of: 3, seenBy: $0) != .alive }
            return false
        }
        XCTAssertTrue(starvedWasNoticed, "the freeze was long enough for peers to suspect the starved node")
        XCTAssertTrue(deaths.isEmpty, "healthy peers declared dead: \(deaths.prefix(5))")
        XCTAssertEqual(sim.fractionSeeingAlive(3), 1, "the starved node refuted and is back")
    }
}
