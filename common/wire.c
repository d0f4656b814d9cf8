/* wire.c -- names of wire opcodes for logs. */
#include "common/wire.h"

const char *wire_opcode_name(uint16_t opcode)
{
    switch ((enum wire_opcode)opcode) {
    case WIRE_OP_PING:               return "PING";
    case WIRE_OP_ENLIST_SERVER:      return "ENLIST_SERVER";
    case WIRE_OP_GET_SERVER_LIST:    return "GET_SERVER_LIST";
    case WIRE_OP_CREATE_TABLE:       return "CREATE_TABLE";
    case WIRE_OP_DROP_TABLE:         return "DROP_TABLE";
    case WIRE_OP_GET_TABLE_ID:       return "GET_TABLE_ID";
    case WIRE_OP_GET_TABLE_CONFIG:   return "GET_TABLE_CONFIG";
    case WIRE_OP_LIST_TABLES:        return "LIST_TABLES";
    case WIRE_OP_HINT_SERVER_CRASHED: return "HINT_SERVER_CRASHED";
    case WIRE_OP_SET_MASTER_RECOVERY_INFO: return "SET_MASTER_RECOVERY_INFO";
    case WIRE_OP_RECOVERY_MASTER_FINISHED: return "RECOVERY_MASTER_FINISHED";
    case WIRE_OP_GET_RECOVERY_STATUS: return "GET_RECOVERY_STATUS";
    case WIRE_OP_RECOVER:            return "RECOVER";
    case WIRE_OP_BACKUP_GET_RECOVERY_DATA: return "BACKUP_GET_RECOVERY_DATA";
    case WIRE_OP_TAKE_TABLET:        return "TAKE_TABLET";
    case WIRE_OP_DROP_TABLET:        return "DROP_TABLET";
    case WIRE_OP_GET_SERVER_STATS:   return "GET_SERVER_STATS";
    case WIRE_OP_SERVER_LIST_UPDATE: return "SERVER_LIST_UPDATE";
    case WIRE_OP_READ:               return "READ";
    case WIRE_OP_WRITE:              return "WRITE";
    case WIRE_OP_REMOVE:             return "REMOVE";
    case WIRE_OP_INCREMENT:          return "INCREMENT";
    case WIRE_OP_MULTI_READ:         return "MULTI_READ";
    case WIRE_OP_MULTI_WRITE:        return "MULTI_WRITE";
    case WIRE_OP_MULTI_REMOVE:       return "MULTI_REMOVE";
    case WIRE_OP_ENUMERATE:          return "ENUMERATE";
    case WIRE_OP_BACKUP_WRITE:       return "BACKUP_WRITE";
    case WIRE_OP_BACKUP_FREE:        return "BACKUP_FREE";
    case WIRE_OP_BACKUP_LIST:        return "BACKUP_LIST";
    case WIRE_OP_BACKUP_READ:        return "BACKUP_READ";
    case WIRE_OP_ILLEGAL:            break;
    }
    return "ILLEGAL";
}
