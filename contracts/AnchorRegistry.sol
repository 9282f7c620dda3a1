// SPDX-License-Identifier: Apache-2.0
// Pinned to the compiler that built the committed artifact (agent/anchor/AnchorRegistry.json):
// a rebuild must give the same bytes, metadata hash included.
pragma solidity 0.8.37;

/// @title AnchorRegistry: edgeseal's checkpoints of device logs on chain (DESIGN §3.5)
/// @notice A gateway anchors a device log's (treeSize, root) checkpoint; only hashes come
/// here, never readings. Each submitter has its own sequence per device: anyone may call,
/// and a reader trusts the submitter addresses it knows.
/// @dev Storage is one slot per (submitter, deviceKeyId): the latest treeSize and the block
/// of its anchor. The root lives only in the Anchored event (a stored root would cost a
/// second slot, ~22k gas more on a first anchor); a reader takes the block number from
/// latest() and fetches the event from that block with a topic filter on deviceKeyId.
/// Reverts carry reason strings, not custom errors: web3.py 8 does not decode custom
/// errors, and Besu/Quorum tools show the string as is.
contract AnchorRegistry {
    struct Checkpoint {
        uint64 treeSize; // strictly increasing per (submitter, deviceKeyId); 0 = never anchored
        uint64 blockNumber; // the block of the anchor, where its Anchored event is
    }

    mapping(address submitter => mapping(bytes32 deviceKeyId => Checkpoint)) private checkpoints;

    event Anchored(address indexed submitter, bytes32 indexed deviceKeyId, uint64 treeSize, bytes32 root);

    /// @notice Anchors the checkpoint (treeSize, root) of the log of device deviceKeyId.
    function anchor(bytes32 deviceKeyId, uint64 treeSize, bytes32 root) external {
        require(root != bytes32(0), "AnchorRegistry: zero root");
        require(treeSize != 0, "AnchorRegistry: zero treeSize");
        Checkpoint storage latestCheckpoint = checkpoints[msg.sender][deviceKeyId];
        // an equal size is refused too: one size has one root, and a replay would only add noise
        require(treeSize > latestCheckpoint.treeSize, "AnchorRegistry: treeSize not increasing");
        latestCheckpoint.treeSize = treeSize;
        // block numbers stay far below 2**64 on any chain; the cast cannot truncate in practice
        latestCheckpoint.blockNumber = uint64(block.number);
        emit Anchored(msg.sender, deviceKeyId, treeSize, root);
    }

    /// @notice The latest checkpoint that submitter anchored for deviceKeyId: its treeSize and
    /// the block holding its Anchored event (with the root); (0, 0) if none.
    function latest(address submitter, bytes32 deviceKeyId)
        external
        view
        returns (uint64 treeSize, uint64 blockNumber)
    {
        Checkpoint storage checkpoint = checkpoints[submitter][deviceKeyId];
        return (checkpoint.treeSize, checkpoint.blockNumber);
    }
}
