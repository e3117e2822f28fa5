"""Typed rpc handles of schemas/v1/agent.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Streaming, Unary
from schemas.v1 import agent_pb2


class AgentService:
    """The `agent` component (aifleet.v1.AgentService)."""

    ToolCreate: Final = Unary(
        "agent",
        "tool_create",
        agent_pb2.ToolCreateRequest,
        agent_pb2.ToolResponse,
    )
    ToolGet: Final = Unary(
        "agent",
        "tool_get",
        agent_pb2.ToolGetRequest,
        agent_pb2.ToolResponse,
    )
    ToolUpdate: Final = Unary(
        "agent",
        "tool_update",
        agent_pb2.ToolUpdateRequest,
        agent_pb2.ToolResponse,
    )
    ToolDelete: Final = Unary(
        "agent",
        "tool_delete",
        agent_pb2.ToolDeleteRequest,
        agent_pb2.ToolDeleteResponse,
    )
    ToolList: Final = Unary(
        "agent",
        "tool_list",
        agent_pb2.ToolListRequest,
        agent_pb2.ToolListResponse,
    )
    GrantPermission: Final = Unary(
        "agent",
        "grant_permission",
        agent_pb2.GrantPermissionRequest,
        agent_pb2.PermissionResponse,
    )
    RevokePermission: Final = Unary(
        "agent",
        "revoke_permission",
        agent_pb2.RevokePermissionRequest,
        agent_pb2.PermissionResponse,
    )
    CheckPermission: Final = Unary(
        "agent",
        "check_permission",
        agent_pb2.CheckPermissionRequest,
        agent_pb2.CheckPermissionResponse,
    )
    ListPermissions: Final = Unary(
        "agent",
        "list_permissions",
        agent_pb2.ListPermissionsRequest,
        agent_pb2.ListPermissionsResponse,
    )
    DefinitionSchemas: Final = Unary(
        "agent",
        "definition_schemas",
        agent_pb2.DefinitionSchemasRequest,
        agent_pb2.DefinitionSchemasResponse,
    )
    CreateAgent: Final = Unary(
        "agent",
        "create_agent",
        agent_pb2.CreateAgentRequest,
        agent_pb2.AgentResponse,
    )
    GetAgent: Final = Unary(
        "agent",
        "get_agent",
        agent_pb2.GetAgentRequest,
        agent_pb2.AgentResponse,
    )
    UpdateAgent: Final = Unary(
        "agent",
        "update_agent",
        agent_pb2.UpdateAgentRequest,
        agent_pb2.AgentResponse,
    )
    DeleteAgent: Final = Unary(
        "agent",
        "delete_agent",
        agent_pb2.DeleteAgentRequest,
        agent_pb2.DeleteAgentResponse,
    )
    ListAgents: Final = Unary(
        "agent",
        "list_agents",
        agent_pb2.ListAgentsRequest,
        agent_pb2.ListAgentsResponse,
    )
    ListAgentTools: Final = Unary(
        "agent",
        "list_agent_tools",
        agent_pb2.ListAgentToolsRequest,
        agent_pb2.ListAgentToolsResponse,
    )
    Chat: Final = Unary(
        "agent",
        "chat",
        agent_pb2.ChatRequest,
        agent_pb2.ChatResponse,
    )
    ChatStream: Final = Streaming(
        "agent",
        "chat_stream",
        agent_pb2.ChatRequest,
        agent_pb2.ChatEvent,
    )
    ListSessions: Final = Unary(
        "agent",
        "list_sessions",
        agent_pb2.ListSessionsRequest,
        agent_pb2.ListSessionsResponse,
    )
    GetSession: Final = Unary(
        "agent",
        "get_session",
        agent_pb2.GetSessionRequest,
        agent_pb2.GetSessionResponse,
    )
    DeleteSession: Final = Unary(
        "agent",
        "delete_session",
        agent_pb2.DeleteSessionRequest,
        agent_pb2.DeleteSessionResponse,
    )
    GetRun: Final = Unary(
        "agent",
        "get_run",
        agent_pb2.GetRunRequest,
        agent_pb2.GetRunResponse,
    )
    Execute: Final = Unary(
        "agent",
        "execute",
        agent_pb2.ExecuteRequest,
        agent_pb2.ExecuteResponse,
    )
    GetTask: Final = Unary(
        "agent",
        "get_task",
        agent_pb2.GetTaskRequest,
        agent_pb2.GetTaskResponse,
    )
    CancelTask: Final = Unary(
        "agent",
        "cancel_task",
        agent_pb2.CancelTaskRequest,
        agent_pb2.GetTaskResponse,
    )
    ListTasks: Final = Unary(
        "agent",
        "list_tasks",
        agent_pb2.ListTasksRequest,
        agent_pb2.ListTasksResponse,
    )
    MemoryList: Final = Unary(
        "agent",
        "memory_list",
        agent_pb2.MemoryListRequest,
        agent_pb2.MemoryListResponse,
    )
    MemorySearch: Final = Unary(
        "agent",
        "memory_search",
        agent_pb2.MemorySearchRequest,
        agent_pb2.MemorySearchResponse,
    )
    MemoryInsert: Final = Unary(
        "agent",
        "memory_insert",
        agent_pb2.MemoryInsertRequest,
        agent_pb2.MemoryInsertResponse,
    )
    MemoryDelete: Final = Unary(
        "agent",
        "memory_delete",
        agent_pb2.MemoryDeleteRequest,
        agent_pb2.MemoryDeleteResponse,
    )
    MemoryDeleteUser: Final = Unary(
        "agent",
        "memory_delete_user",
        agent_pb2.MemoryDeleteUserRequest,
        agent_pb2.MemoryDeleteUserResponse,
    )
    MemoryBlocks: Final = Unary(
        "agent",
        "memory_blocks",
        agent_pb2.MemoryBlocksRequest,
        agent_pb2.MemoryBlocksResponse,
    )
    MemorySetBlock: Final = Unary(
        "agent",
        "memory_set_block",
        agent_pb2.MemorySetBlockRequest,
        agent_pb2.MemoryBlocksResponse,
    )
